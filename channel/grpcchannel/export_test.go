package grpcchannel

// WireMessage reports whether m is a message of a Connect or Link stream as
// an interceptor sees it (the codec's own types, not exchangepb's: see
// codec.go), whether it is a batch, and of how many frames.
func WireMessage(m any) (ok, batch bool, frames int) {
	switch m := m.(type) {
	case *outbound:
		if m.isBatch {
			return true, true, len(m.batch)
		}
		return true, false, 1
	case *inbound:
		if m.isBatch {
			return true, true, len(m.batch)
		}
		return true, false, 1
	}
	return false, false, 0
}
