// Package channeltest is the conformance suite for channel transports, in the
// style of golang.org/x/net/nettest: any implementation of channel.Conn (the
// embedded twin, the gRPC twin, a future WebSocket twin) proves it behaves as
// the channel package expects by running two test functions, and measures
// itself with one benchmark function.
//
//   - TestConn checks the channel.Conn contract: every field of commands and
//     replies round-trips, order is preserved, the frame size limit is enforced
//     with channel.ErrFrameTooLarge, Close unblocks Send and Recv, a peer's
//     close is seen as channel.ErrClosed, and frames are never aliased between
//     the two ends; a Conn that is a channel.BatchSender also sends batches,
//     all or nothing.
//   - TestChannel runs the one channel.Channel implementation over the
//     transport and checks its semantics end to end: correlation, deadlines,
//     in-flight bounds (and the capacity reserved for control commands),
//     remote and unknown-command errors, close semantics,
//     malformed frames and the HELLO handshake; then all of it again with
//     channel.Config.Coalesce set, plus a burst that must go out in batches.
//   - RunBenchmarks measures Channel.Send over the transport, sequentially and
//     with 64 commands in flight, with and without coalescing.
//   - TestInlineReceiver, for a Conn that is a channel.InlineReceiver (the
//     embedded twin), checks that frames handed to the receiving Channel on
//     the sender's goroutine keep the order and copies Recv guarantees.
//
// FaultConn is a decorator that injects faults (stalls, dropped frames, failed
// sends) into any Conn, for tests of health checks and stalled peers. It
// passes batches through, and counts them.
//
// # Running the suite for a new twin
//
// Write a MakePipe that returns the two connected ends of one connection and
// registers its own cleanup, then call the suite from the twin's tests (two
// lines), and the benchmarks from one benchmark:
//
//	// pipe is the MakePipe of mytwin.
//	func pipe(t testing.TB) (a, b channel.Conn) {
//		a, b = mytwin.Pipe() // however the twin connects a dialing and an accepting end
//		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
//		return a, b
//	}
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
//
//	func TestConformance(t *testing.T) {
//		channeltest.TestConn(t, pipe)
//		channeltest.TestChannel(t, pipe)
//	}
//
//	func BenchmarkMyTwin(b *testing.B) { channeltest.RunBenchmarks(b, pipe) }
//
// Run it as any test, with the race detector:
//
//	go test -race -run Conformance ./channel/mytwin/
//	go test -run '^$' -bench MyTwin -benchmem -benchtime 200ms ./channel/mytwin/
//
// Single subtests can be selected by name, for example
// -run 'Conformance/PeerCloseIsErrClosed'; TestConn's and TestChannel's
// subtests are listed in their documentation.
//
// Requirements on the transport under test, beyond the channel.Conn contract:
//
//   - Side a is the dialing (connector) end and side b the accepting
//     (controller) end. The suite uses them symmetrically except in the HELLO
//     tests, where a sends HELLO, and in SentBeforeCloseDelivered, which
//     requires only b's frames to survive b's close (a gRPC server handler
//     that returns after sending; a client that cancels its stream may lose
//     frames in flight).
//   - Every field of command.Command and command.Reply travels, durations in
//     whole milliseconds at least.
//   - The frame size limit is channel.DefaultMaxFrameBytes (4 MiB); LargeFrame
//     sends a payload 4 KiB under it and one a byte over it, which Send must
//     refuse with channel.ErrFrameTooLarge before anything is written.
//   - Send must block when the peer does not read (CloseUnblocksSend fills
//     the pipe with 64 KiB frames and fails past 256 MiB).
//
// The suite starts goroutines and waits for them; run it serially (no
// t.Parallel) and check for leaks in TestMain with goleak.VerifyTestMain, as
// every package of this module does. Every wait in the suite is bounded (10 s
// per subtest), so a broken transport fails the test instead of hanging it,
// and the whole suite takes about a second on the embedded twin.
package channeltest
