// Package route decides where a command for a target goes: which local
// channel, or which remote node, or nowhere. It is pure: the controller
// gathers the candidates from the replicated state and its live channels and
// executes the Choice.
package route

// Candidate is one channel that could carry a command for the target.
type Candidate struct {
	// ChannelID identifies the channel.
	ChannelID string
	// NodeID is the node holding the channel.
	NodeID string
	// Local is true when this node holds the channel and it is alive. Channels
	// registered to this node but already dead must not be candidates at all.
	Local bool
	// InFlight is the number of commands in progress on a local channel (both
	// directions). Unknown (zero) for remote channels.
	InFlight int
}

// Kind says what a Choice is.
type Kind int

// Choice kinds.
const (
	// None: no channel can carry the command.
	None Kind = iota
	// Local: send on the local channel Choice.ChannelID.
	Local
	// Remote: the channel lives on node Choice.NodeID; forward it there.
	Remote
)

// Choice is the outcome of Pick.
type Choice struct {
	Kind      Kind
	ChannelID string
	NodeID    string
}

// Pick chooses a channel for one command. cands must be in a stable order
// (registration order); turn breaks ties in rotation (pass a counter that
// grows with every send) so that equally idle channels share the load.
//
// Without primaryOnly: the local channel with the fewest commands in flight
// wins; with no local channel, a remote one is chosen in rotation. With
// primaryOnly: only primaryID qualifies, local or remote; an empty primaryID
// or a primary that is not among cands gives None.
func Pick(cands []Candidate, primaryOnly bool, primaryID string, turn uint64) Choice {
	if primaryOnly {
		if primaryID == "" {
			return Choice{}
		}
		for _, c := range cands {
			if c.ChannelID != primaryID {
				continue
			}
			if c.Local {
				return Choice{Kind: Local, ChannelID: c.ChannelID, NodeID: c.NodeID}
			}
			return Choice{Kind: Remote, ChannelID: c.ChannelID, NodeID: c.NodeID}
		}
		return Choice{}
	}

	least, ties := -1, 0
	for _, c := range cands {
		if !c.Local {
			continue
		}
		switch {
		case least < 0 || c.InFlight < least:
			least, ties = c.InFlight, 1
		case c.InFlight == least:
			ties++
		}
	}
	if least >= 0 {
		k := int(turn % uint64(ties))
		for _, c := range cands {
			if c.Local && c.InFlight == least {
				if k == 0 {
					return Choice{Kind: Local, ChannelID: c.ChannelID, NodeID: c.NodeID}
				}
				k--
			}
		}
	}
	if len(cands) == 0 {
		return Choice{}
	}
	c := cands[int(turn%uint64(len(cands)))] // no local candidate: all are remote
	return Choice{Kind: Remote, ChannelID: c.ChannelID, NodeID: c.NodeID}
}
