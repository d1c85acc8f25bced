// Package connector is the client side of Exchange: a Connector opens one
// long-lived channel to a controller node, says who it is (connector id and
// target id), answers the controller's commands, and keeps the channel alive
// through controller restarts, network drops and node failures, without ever
// stampeding the controllers. An edge agent, a gateway or a device service
// embeds one.
//
// The package depends only on command and channel: the transport is injected
// as channel.Dialers (the embedded twin in one process, the gRPC twin over a
// network), and it never imports raft, memberlist, bbolt or echo (a test
// enforces it).
//
// # Usage
//
// (1) Register the commands the connector answers on a command.Mux:
//
//	mux := command.NewMux()
//	mux.Register("ECHO", command.Typed(func(ctx context.Context, in string) (string, error) {
//		return in, nil
//	}))
//
// (2) Configure it: the target to join is required; the rest has defaults.
//
//	cfg := connector.DefaultConfig()
//	cfg.TargetID = "gateways"
//	cfg.Token = os.Getenv("EXCHANGE_TOKEN")
//	cfg.Health = func(ctx context.Context) (bool, string) { return db.PingContext(ctx) == nil, "database" }
//	cfg.OnPrimary = func(primary bool, epoch uint64) { scheduler.SetLeader(primary, epoch) }
//
// (3) Build it over one or more endpoints, tried in order with failover. In
// one process, the controller's embedded listener is the dialer:
//
//	lis := embedded.Listen() // also handed to the controller as its channel.Listener
//	c, err := connector.New(cfg, mux, lis)
//
// (4) Run it: it blocks, reconnecting as needed, until its context is done or
// Close is called. Meanwhile Send talks to the controller node:
//
//	go func() { errc <- c.Run(ctx) }()
//	if err := c.WaitConnected(ctx); err != nil { /* stopped, or ctx done */ }
//	reply, err := c.Send(ctx, command.MustCommand("REPORT", status))
//
// (5) Close it: Close stops Run and waits for every goroutine it started.
//
// ExampleConnector runs all of this against a hand-made controller.
//
// # Connecting and reconnecting
//
// Each attempt dials one endpoint and runs the HELLO handshake (connector id,
// target id, token, metadata, protocol version), bounded together by
// HelloTimeout. The connector adopts the target id and channel id of the HELLO
// reply: the controller may rewrite the target. A failed attempt moves on to
// the next endpoint; once connected, a lost channel is retried on the same
// endpoint first.
//
// Between attempts the connector waits with exponential backoff and full
// jitter: after the n-th consecutive failure (n from 0) it waits a duration
// drawn uniformly from [0, min(BackoffMax, BackoffBase·2^n)). The count of
// failures resets only once a connection has stayed up for StableAfter, not
// when a handshake succeeds, so a controller that accepts and then drops
// connections at once does not cause a reconnect storm.
//
// What ends a channel, and what follows:
//
//	cause                                   next
//	stream broken, controller crashed,      reconnect after the backoff, same endpoint first
//	malformed frame, missed heartbeats
//	GOOD_BYE{reconnect:true}                reconnect after the first backoff step (jittered),
//	                                        on the next endpoint: the controller wants us elsewhere
//	GOOD_BYE{reconnect:false}               Run returns a *GoodByeError (ErrGoodBye)
//	HELLO refused                           Run returns the *channel.HelloRejectedError; no retry
//	dial or handshake failure, timeout      next endpoint, after the backoff
//	Close, or Run's context done            Run returns nil; never a reconnection
//
// A GOOD_BYE is answered SUCCEEDED; the connector then stops using the channel
// and waits (at most two seconds) for the controller to close it, so that the
// reply arrives, before closing it itself.
//
// When the HELLO reply announces a heartbeat (the controller's health-check
// interval), a channel on which no command arrives for MissedHeartbeats
// heartbeats is taken for half-open and replaced: a silent peer is not
// mistaken for a quiet one. Transport keepalives (gRPC) detect dead links
// sooner; this catches the rest.
//
// Pending Sends fail at once, with an error wrapping channel.ErrClosed, when
// their channel closes; Send fails at once with ErrNotConnected while there is
// no channel. Connection states are reported to Config.OnState:
// Connecting → Connected → Disconnected → Connecting … → Stopped.
//
// # Commands from the controller
//
// GOOD_BYE and PRIMARY are always handled by the connector itself, whatever
// the Mux holds. HEALTH_CHECK goes to the Mux's HEALTH_CHECK handler if there
// is one, else to Config.Health (nil: healthy). Every other command goes to
// the Mux; a type it does not know is answered UNKNOWN.
//
// # Primary
//
// The controller elects one primary channel per target and tells it
// PRIMARY{primary:true, epoch}. IsPrimary is false after every (re)connection
// until told otherwise, and becomes false the moment the channel closes (or a
// GOOD_BYE arrives), since the connector can no longer know whether it still
// holds the role. A PRIMARY whose epoch is lower than the highest already seen
// for the target is stale and ignored. Config.OnPrimary hears every change, in
// order. Use the epoch as a fencing token in the systems the primary writes to,
// so that they can reject a demoted primary that learns late.
//
// # Effectively-once handling
//
// Batches retry commands with the same ids, and a controller resends a command
// whose reply was lost to a broken channel. The connector therefore remembers
// the last DedupWindow user commands that completed successfully, with their
// replies, for the Connector's whole life (across reconnections). A command
// is remembered by its id and a 64-bit digest (hash/maphash, randomly
// seeded) of its type and payload, 8 bytes an entry; metadata and timeout are
// not part of it, as they may differ between deliveries of the same command:
//
//   - a command whose id, type and payload are remembered is answered with
//     the remembered reply, and its handler does not run again;
//   - a command whose id, type and payload are still running (typically the
//     retry of a command cut off by a reconnection) waits for that run and
//     gets its reply;
//   - a command that reuses a remembered or running id with another type or
//     payload is a different command, not a retry: it is refused with an
//     ERROR reply, code 409, "command id X was already used for a different
//     command", and its handler does not run;
//   - a failure (a handler error or panic, or a reply with status ERROR) is not
//     remembered: a retry runs the handler again, since that is what retries
//     are for.
//
// So a handler runs at most once per id while the id is in the window, and a
// successful result is delivered to every retry of it. The window holds ids in
// insertion order and forgets the oldest beyond DedupWindow (default 1024); a
// retry arriving after that runs the handler again, so handlers with side
// effects that must never repeat should still be idempotent. The built-ins
// (HELLO, GOOD_BYE, PRIMARY, HEALTH_CHECK) are not deduplicated, nor are
// commands whose id their sender's channel made for that delivery alone
// (command.Command.FreshID: sent without an id; no retry can carry it).
//
// To make this work, a user handler runs with a context that ends at the
// command's deadline or when Run ends, but not when the channel drops (it
// runs on the channel's handler goroutine, whose Close the connector does not
// wait for before reconnecting). Work cut off from its caller by a
// reconnection thus completes, and its reply waits in the window for the
// retry. Handlers must still return once their context is done: Close waits
// for them.
//
// # Goroutines
//
// Run's own goroutine reads the live channel (channel.NewHosted). Run owns:
// the notifier, which runs OnState and OnPrimary one at a time, in order, with
// no lock held, on a goroutine that exists only while it has events to
// deliver; one goroutine per closing channel (a handler stuck on a closed
// channel must not delay the reconnection); and, through each
// channel.Channel, its writer and handler goroutines, each only while busy
// (user handlers run on the latter). A connected, idle connector thus owns no
// goroutine besides Run's (gRPC keeps one of its own per stream). All end
// before Run returns, and Close waits for Run.
// Callbacks and handlers must not call Close (cancel Run's context instead).
//
// # Compared with the reference
//
// The reference connector's close handler replaced the channel's own, so
// pending sends waited for their timeout after a disconnect (weakness 20);
// here they fail at once. With auto-reconnect on, it reconnected even after a
// local close (weakness 21); here Close never reconnects. Its legacy HELLO
// adapter changed the command id and leaked the pending slot on timeout
// (weakness 26); here the handshake runs on the bare Conn before the channel
// exists, and ends with the dial when HelloTimeout expires. Its endpoints had
// to be http(s) URLs (weakness 27); here an endpoint is any channel.Dialer.
// Its backoff was 1 s × 1.5ⁿ without jitter and retried every endpoint in turn
// from the first; here it is jittered, capped, and resets only after a stable
// connection.
package connector
