// Package membership tells each controller node which other nodes are in the
// cluster, where their raft and gRPC endpoints are, and which of them left or
// failed. It wraps hashicorp/memberlist (SWIM gossip with Lifeguard failure
// detection) and is independent of raft: the raft leader consumes its events
// to add voters that joined, remove voters that left, and clean up the
// channels of nodes that failed (ARCHITECTURE §4 "Node failure", §11).
//
// # Usage
//
//  1. cfg := membership.DefaultConfig(); set NodeID, BindAddr (the gossip
//     port, default :7402), Meta (RaftAddr, GRPCAddr, a fresh Incarnation
//     per process start) and Join (gossip addresses of existing nodes).
//  2. m, err := membership.Start(ctx, cfg): binds, then joins through Join,
//     retrying with backoff until one answers or ctx ends (ErrJoin). A node
//     with no Join address starts alone. ErrNodeIDConflict if a live node
//     already has the id.
//  3. Read m.Events() (one consumer) for EventJoin, EventUpdate, EventLeave
//     and EventFail; m.Members() for the current view; m.UpdateMeta(ctx,
//     meta) to change what this node advertises.
//  4. On shutdown: m.Leave(ctx), so the others see StateLeft instead of
//     StateDead, then m.Close().
//
// # Left versus failed
//
// A node that calls Leave is reported as EventLeave / StateLeft everywhere;
// a node that stops answering (crash, Close without Leave, partition) as
// EventFail / StateDead after the failure detector's delay. memberlist
// v0.6.0 does not say which of the two happened (it leaves
// memberlist.Node.State unset in its callbacks), so Leave first gossips a
// leaving flag in the node's metadata, waits for that broadcast, and only
// then sends memberlist's leave message. A node that missed the flag (lost
// broadcasts, or a Leave whose ctx ended before the flag went out) sees the
// leave as a failure, so a consumer must handle EventFail for a node that in
// fact left; the reverse (a failure reported as a leave) only happens when a
// node crashes between the two broadcasts.
//
// # Events
//
// memberlist calls its event delegate under its node lock, so the delegate
// only queues: one goroutine owned by the Membership delivers the queue on
// Events. The queue holds at most one event per node: while the consumer is
// busy, a node's newer event replaces its undelivered older one (a join
// updated before delivery stays a join), so memory is bounded by the number
// of nodes and memberlist is never blocked. A consumer that falls behind sees
// each node's latest state, not every transition; a failure followed by a
// rejoin shows as a join with a new Meta.Incarnation. Coalesced counts the
// replaced events. The first event is this node's own join.
//
// # Metadata
//
// Meta travels in memberlist's node metadata as compact JSON
// ({"id":..,"raft":..,"grpc":..,"inc":..,"v":..}), which must fit
// MetaMaxSize (512 bytes): Config.Validate, Start and UpdateMeta refuse a
// larger one with ErrMetaTooLarge. A node whose metadata is not Exchange's,
// or names another node, is kept out of the cluster.
//
// # Timings
//
// DefaultConfig is memberlist's LAN profile with 200 ms probes (100 ms probe
// timeout) and 100 ms gossip: on 3-5 nodes a stopped node is dead everywhere
// in 1.0-1.3 s instead of 5.8-6.8 s, and a join reaches every node in about
// 100 ms instead of 200 ms (measured in docs/benchmarks.md, "Membership
// (memberlist)"). Do not use memberlist's Local profile without raising
// RetransmitMult to 4: with its 2, one join in eight took 15-20 s to reach
// every node of 5, and one failure 21.7 s.
//
// # Security
//
// Config.SecretKey (16, 24 or 32 bytes, the same on every node) encrypts
// gossip; nodes with another key or none cannot join. Without it, gossip is
// plain text and any host that reaches the gossip port can join.
//
// # Goroutines
//
// Membership owns one goroutine (the event dispatcher) plus one per Leave or
// UpdateMeta in progress; Close waits for them. memberlist runs its own
// listeners and timers, which its Shutdown stops without waiting.
package membership
