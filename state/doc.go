// Package state is Exchange's replicated state: the channel registry, the
// primary channel of each target with its epoch, and the persisted batches.
//
// State changes only through Apply(Op), a pure, deterministic function: the
// same ops in the same order give the same State on every node. That is what
// lets one code path serve the in-memory store (Memory, for embedded use and
// tests) and the raft-backed store of package cluster, where ops are raft log
// entries applied by the FSM on every node.
//
// Primary election runs inside Apply, as the pure function Elect, right after
// every registry change, so the registry and the primaries can never disagree
// and no node ever sees two primaries for a target. The rules:
//
//  1. A target keeps its primary while that channel stays registered: a newer
//     channel never steals the role.
//  2. A target without a primary (none yet, or the primary's channel gone)
//     gets its longest-registered active channel (lowest registration
//     sequence).
//  3. Every change of a target's primary, including losing it, takes the
//     next value of the State's global epoch counter. A target's epochs
//     therefore never go backwards, even when it leaves (its Primaries entry
//     goes with its last channel) and comes back, and even across restarts,
//     because the counter lives in the replicated state and its snapshots.
//
// State keeps indexes of its channels (by target in registration order, by
// node, by target and connector), maintained by Apply and rebuilt by
// Unmarshal, never serialised: registry ops cost what they change, never a
// scan of the registry.
//
// Apply returns Events describing what changed, which stores hand to their
// subscribers (controllers tell their channels PRIMARY true/false from them).
package state
