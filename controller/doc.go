// Package controller is the controller side of Exchange: it accepts the
// channels that connectors open, authenticates their HELLO, registers them in
// the replicated state, health-checks them, tells each connector whether it
// is its target's primary, and sends commands to targets.
//
// A Controller keeps no registry of its own. The registry and the primaries
// live in a Store (state.Memory on a single node, the raft-backed store of
// package cluster in a cluster); the controller holds only the live channel
// objects of its own node and their live figures (last healthy time, commands
// in flight). Primary election is not the controller's either: it runs inside
// the state's Apply (state.Elect), identically on every node, so no node ever
// sees two primaries for a target. The controller's part is to make each of
// its connectors believe what the state says.
//
// # Usage
//
//	ctrl, err := controller.New(controller.Config{
//		NodeID:        "node-1",
//		Authenticator: controller.StaticTokens(token),
//		Handler:       mux, // commands sent by connectors
//	}, listener, standalone.New("node-1")) // or a cluster.Node
//	go ctrl.Run(ctx)
//	reply, err := ctrl.Send(ctx, "edge-1", command.MustCommand("ECHO", "hi"))
//	...
//	ctrl.Close() // GOOD_BYE to every connector, registry emptied
//
// # Order of operations
//
// Run:
//
//  1. subscribes to the store's events;
//  2. applies RemoveNodeChannels{NodeID}: the channels this node held before
//     a restart died with the process (retried until it succeeds);
//  3. starts the accept loop, the health loop and the primary notifier.
//
// For each connection:
//
//  1. the first frame must be HELLO, within Config.HelloTimeout, its payload
//     at most command.MaxHelloBytes (checked before decoding);
//  2. the ids and metadata it carries must keep to the identity limits
//     (command.CheckIdentity), checked before the Authenticator and again
//     after it;
//  3. the Authenticator decides (and may rewrite the target); reserved
//     metadata keys ("exchange.") sent by the connector are dropped first;
//  4. a refusal is answered with an ERROR reply carrying the reason, and the
//     connection is closed (counted in Metrics.HelloRejected);
//  5. an acceptance is answered with a HELLO reply (target, channel id,
//     protocol version, limits, heartbeat, node id), then the channel starts;
//  6. the channel is registered (Apply Register), through a group commit
//     that coalesces the registrations of many connections into few Applies;
//     a channel with a connector id takes over, in that same change, the
//     target's other channels of that connector, primary role included
//     (docs/decisions/0018-connector-id-takeover.md);
//  7. when the channel dies, it is unregistered at once (Apply Unregister,
//     retried until it succeeds); when the state loses it instead (taken
//     over, or removed by another node), the primary notifier sees it and
//     the channel is told GOOD_BYE and closed.
//
// Each registry change triggers the primary notifier, which sends PRIMARY
// {primary, epoch} to every local channel whose role or epoch differs from
// what it was last told successfully: the first channel of a target is told
// primary:true, a channel joining a target that has a primary is told
// primary:false, and when the primary's channel dies the survivor chosen by
// the state is told primary:true with a higher epoch. Failed notifications
// are retried with backoff. The notifier looks only at what changed (the
// local channels of the targets whose primary changed, and the local
// channels registered or unregistered), so a wake costs the same at 1,000
// and at 100,000 local channels; a periodic reconcile of every local channel
// (Config.ReconcileInterval) is the safety net.
//
// Every Config.HealthInterval the health loop sends HEALTH_CHECK to every
// registered local channel (Config.HealthConcurrency at a time, each bounded
// by Config.HealthTimeout). A channel that answers healthy:false, does not
// answer in time or fails is told GOOD_BYE{reconnect:true}, closed and
// unregistered (Metrics.HealthCheckFailed).
//
// Send reads the local copy of the state, never the store's log: it picks the
// target's local channel with the fewest commands in flight (SendPrimary: the
// primary), and fails at once with a *NoChannelError when there is none.
// Channels held by other nodes need forwarding, which is not available yet
// (ErrForwardingUnavailable).
//
// Close stops accepting, stops the loops, says GOOD_BYE{reconnect:true} to
// every local channel, unregisters them all in one Apply, delivers the last
// listener events and waits for every goroutine. The GOOD_BYEs and the
// unregistration are bounded as a whole by Config.ShutdownTimeout.
//
// # Goroutines
//
// All are started by Run and stopped and waited for by Close (Run's context
// ending calls Close):
//
//   - accept loop (1): Listener.Accept until the controller closes;
//   - connection: the handshake, then the registration is queued (its
//     outcome is handled on the applier's goroutine); over gRPC on the
//     Connect handler's goroutine (grpcchannel.Server.HandleConns, which
//     then runs the channel's reader), else on a goroutine per connection
//     until the handshake ends; a registered channel's death runs its
//     unregistration (Channel.AfterDone); the channel runs its writer and
//     handler goroutines while in use (package channel);
//   - health loop (1), and per round up to HealthConcurrency checks, waited
//     for before the next round;
//   - primary notifier (1), and up to PrimaryConcurrency PRIMARY sends, at
//     most one per channel;
//   - applier (1): the group commit in front of Store.Apply; stopped after
//     the others, what it left queued is applied by Close;
//   - event dispatcher (1): calls Config.OnEvent in order; stopped last,
//     after delivering the events of Close's final unregistration.
//
// The store's Subscribe callback runs under the store's lock; the controller
// only queues and signals from it.
package controller
