package state

import "errors"

// NodeID names a controller node; ChannelID names a channel. They are
// distinct types where the two could be swapped, as in a forwarded command's
// address (node, channel).
type (
	NodeID    string
	ChannelID string
)

// ErrNodeUnavailable is wrapped by the errors of a command or an apply that
// could not reach the node it was for: a node the cluster does not know, one
// that is down, unreachable, or not serving node links.
var ErrNodeUnavailable = errors.New("node unavailable")
