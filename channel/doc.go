// Package channel runs the command/reply protocol of Exchange over a frame
// pipe. One implementation of the semantics, Channel, serves every transport:
// transports implement only Conn (an ordered pipe of Frames), so the embedded
// and gRPC twins cannot drift, and the conformance suite in
// channel/channeltest pins down what a Conn must do.
//
// # Usage
//
//  1. Get a Conn: from a Dialer on the connector side, from a Listener on the
//     controller side (channel/embedded for in-process use,
//     channel/grpcchannel over the network).
//  2. Shake hands before anything else: the connector calls Hello, the
//     controller calls AcceptHello with a HelloDecider that authenticates the
//     connector. On a rejection, close the Conn. The HELLO must be a lone
//     first frame that expects a reply: a one-way HELLO, or a first frame
//     that cannot be answered, ends the Conn with an ErrMalformedFrame
//     reason (INVALID_ARGUMENT over gRPC); a HELLO that came in a batch is
//     refused with a 400 reply.
//  3. Start a Channel with New(conn, handler, cfg). The handler (usually a
//     command.Mux) answers the peer's commands; both sides may send.
//  4. Send commands with Send (request/reply) or Notify (one-way). Watch Done
//     and Err to learn when and why the channel ended. SendAsync is Send
//     whose outcome goes to a callback, for a caller that must not wait
//     (a cluster node delivering forwarded commands, decision 0057).
//  5. Close the Channel when done. Close waits for the channel's goroutines.
//
// # The Conn contract
//
// A Conn is an ordered, message-oriented, bidirectional pipe. Send and Recv
// may each be called by one goroutine at a time, concurrently with each other
// (the gRPC stream rule); a Channel honours that with one reader and at most
// one goroutine writing at a time. Close may be called at any time, from any
// goroutine, more than once; it unblocks Send and Recv, which then fail with an
// error wrapping ErrClosed. When the peer closes, Recv returns the frames the
// peer sent before closing and then fails with an error wrapping ErrClosed, and
// Send fails with ErrClosed too. Send blocks while the peer does not read
// (back-pressure), copies the frame (or marshals it) before returning, and
// refuses a frame over the transport's limit (DefaultMaxFrameBytes) with an
// error wrapping ErrFrameTooLarge, leaving the Conn usable.
//
// A Conn may also be a BatchSender: SendBatch carries several frames in one
// transport message (the gRPC twin's batch frame), all or nothing. A Channel
// uses it only with Config.Coalesce, which must be set only when the peer
// announced the "batch" capability in HELLO; the connector and the
// controller set it themselves.
//
// # Semantics of a Channel
//
//   - Correlation: every command has an id, unique among the sender's calls in
//     flight (ErrDuplicateID otherwise); its reply carries the id back. A late
//     or unknown reply is logged and dropped.
//   - Deadlines: Send waits until its context's deadline, or
//     Config.DefaultTimeout when the context has none; the time left travels
//     with the command (Command.Timeout) and bounds the peer's handler context.
//     On timeout the error wraps context.DeadlineExceeded and the pending entry
//     is freed at once.
//   - Bounds: Config.MaxInFlight bounds this side's pending calls (a local
//     *BusyError); Config.MaxHandlers bounds the peer's commands handled at
//     once, beyond which the peer gets a busy reply with a retry-after (a
//     remote *BusyError). Control commands (IsControl: HELLO, GOOD_BYE,
//     HEALTH_CHECK, PRIMARY) do not count against either: they have a small
//     bound of their own on both sides, Config.MaxControl (default 16), so
//     that a channel full of slow application commands still answers a
//     health check. A one-way command beyond the bound is dropped; the
//     warning is logged at most once a second per Channel, with the number
//     of drops not logged since the previous line.
//   - Handlers run on their own goroutines, never on the read loop, except
//     that an AsyncHandler may take a command on the reader and answer it
//     later from any goroutine (no goroutine waits for its answer). A handler
//     error or panic becomes a NO_REPLY reply (*RemoteError at the sender); an
//     unregistered type becomes an UNKNOWN reply (*UnknownCommandError). In
//     both cases the channel stays up. A reply built with command.Failed is a
//     reply: the sender gets it with StatusError and a nil error.
//   - Close and failure: when the channel dies (Close, the peer closing, a
//     transport error, a malformed frame) every pending call fails at once
//     with an error wrapping ErrClosed, and every handler's context is
//     cancelled with the same cause, which Err reports.
//   - Coalescing (Config.Coalesce): when the writer takes a frame, it also
//     takes the frames already queued behind it (at most 64, about 64 KiB)
//     and sends them in one transport message. It never waits for more, and
//     a lone frame goes out alone. Every frame keeps its own fate: one that
//     is too large fails alone, exactly as without coalescing.
//   - Malformed frames are never dropped silently: a command with an id but no
//     type gets an ERROR reply with code 400 naming the problem; any other
//     malformed frame closes the channel with an error wrapping
//     ErrMalformedFrame.
//
// # Goroutines
//
// A Channel owns: one reader (readLoop, the only caller of Conn.Recv), on a
// goroutine of its own or on one the Conn lends it (ReaderHost: the gRPC
// server's Connect handler); a writer (writeLoop) while the channel is in use
// (it ends once its queue, at most Config.SendQueue frames and grown on
// demand, has stayed empty for a second); and the handler goroutines, one
// per command being handled, at most Config.MaxHandlers plus
// Config.MaxControl, each of which waits a little (250–500 ms) for the
// channel's next command before it ends, so that its grown stack serves
// again (decision 0036). Frames are written by one goroutine at a time: the
// writer, or, when it finds the Conn free, a Send alone in flight (a
// control command's too: should its write still block at its deadline, the
// channel dies) or the handler of the only command being handled, inline
// (decisions 0021, 0036). A Conn that is an InlineReceiver may run the
// reader's step for a frame on the peer's sending goroutine while the reader
// waits with nothing queued: a reply completes its call, a command within
// its bounds goes to a handler goroutine, never run there (decision 0043;
// the embedded twin does so on every pipe). An idle Channel thus owns one goroutine, or none. Close cancels them and waits for all of them. A
// handler's context starts a timer (and links itself to the channel's
// context) only when the handler asks for its Done channel; most never do. Hello and AcceptHello start no goroutine (they use
// context.AfterFunc to close the Conn if their context ends).
package channel
