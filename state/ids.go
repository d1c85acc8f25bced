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

// ErrClosed is what the errors of a closed Store are (errors.Is): cluster
// and standalone name their own (cluster.ErrClosed, standalone.ErrClosed),
// and both are this one too, so that a caller that knows only the Store
// (the management API, answering 503) can tell a store that is shutting
// down from a failure.
var ErrClosed = errors.New("store closed")

// ClosedError is a sentinel of a Store of its own that is also ErrClosed.
type ClosedError string

func (e ClosedError) Error() string { return string(e) }

// Is reports whether target is ErrClosed.
func (e ClosedError) Is(target error) bool { return target == ErrClosed }
