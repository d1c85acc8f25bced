package channel

// pendingCalls is the set of a Channel's calls awaiting a reply, by command
// id, guarded by Channel.mu. The usual case, one call at a time (a sender
// that waits for each reply, a health check on an idle channel), takes a
// slot of its own: an idle channel keeps no map, and a lone Send touches
// none. A map holds the calls beyond the first while several are in flight;
// it is kept for the next burst unless it grew past keptPendingHigh (maps do
// not shrink), in which case it goes once it empties.
type pendingCalls struct {
	oneID string // the slot's command id; "" when the slot is free
	one   call
	m     map[string]call
	high  int // the most calls in m at once since m was made
}

// len returns how many calls are pending.
func (p *pendingCalls) len() int {
	n := len(p.m)
	if p.oneID != "" {
		n++
	}
	return n
}

// get returns the call of id, if pending.
func (p *pendingCalls) get(id string) (call, bool) {
	if p.oneID != "" && p.oneID == id {
		return p.one, true
	}
	c, ok := p.m[id]
	return c, ok
}

// has reports whether a call of id is pending.
func (p *pendingCalls) has(id string) bool {
	_, ok := p.get(id)
	return ok
}

// put adds the call of id, which is not pending (a non-empty id).
func (p *pendingCalls) put(id string, c call) {
	if p.oneID == "" {
		p.oneID, p.one = id, c
		return
	}
	if p.m == nil {
		p.m = make(map[string]call)
	}
	p.m[id] = c
	p.high = max(p.high, len(p.m))
}

// del drops the call of id.
func (p *pendingCalls) del(id string) {
	if p.oneID != "" && p.oneID == id {
		p.oneID, p.one = "", call{}
		return
	}
	delete(p.m, id)
	if len(p.m) == 0 && p.high > keptPendingHigh {
		p.m, p.high = nil, 0
	}
}

// takeAll empties the set and returns what it held.
func (p *pendingCalls) takeAll() []call {
	out := make([]call, 0, p.len())
	if p.oneID != "" {
		out = append(out, p.one)
	}
	for _, c := range p.m {
		out = append(out, c)
	}
	*p = pendingCalls{}
	return out
}
