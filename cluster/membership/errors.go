package membership

import "errors"

var (
	// ErrClosed is returned by operations on a closed Membership.
	ErrClosed = errors.New("membership: closed")
	// ErrInvalidConfig is wrapped by Config.Validate errors.
	ErrInvalidConfig = errors.New("membership: invalid config")
	// ErrMetaTooLarge is wrapped by Config.Validate and UpdateMeta when the
	// encoded Meta does not fit memberlist's node metadata (MetaMaxSize,
	// 512 bytes).
	ErrMetaTooLarge = errors.New("membership: node metadata too large")
	// ErrNodeIDConflict is returned by Start when another live node already
	// uses this node's NodeID at another address. memberlist keys members by
	// name, so two nodes with one id cannot both be members.
	ErrNodeIDConflict = errors.New("membership: node id used by another node")
	// ErrJoin is wrapped by Start when no Join address could be reached
	// before ctx ended.
	ErrJoin = errors.New("membership: join failed")
	// ErrLeft is returned by UpdateMeta after Leave.
	ErrLeft = errors.New("membership: left the cluster")
)
