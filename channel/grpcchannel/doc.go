// Package grpcchannel is the gRPC twin of the channel transport: a connector
// opens one bidirectional gRPC stream (exchange.v1.Exchange/Connect) per
// channel to a controller, and each message on the stream is one frame
// (proto/exchange/v1/exchange.proto, described in docs/protocol.md).
//
// It provides the two ends of a channel.Conn and nothing else: the command and
// reply semantics (correlation, deadlines, HELLO, GOOD_BYE, …) live once in
// channel.Channel, which runs the same way over this package and over
// channel/embedded. Both pass the conformance suite in channel/channeltest,
// and both report the same errors: a closed or broken stream is
// channel.ErrClosed, a protocol violation channel.ErrMalformedFrame, a frame
// over the limit channel.ErrFrameTooLarge; gRPC status codes never leave this
// package.
//
// # Usage
//
// On the controller:
//
//  1. Create the server: srv := grpcchannel.NewServer(grpcchannel.WithTLS(serverTLS)).
//     With cfg.ClientCAs and cfg.ClientAuth = tls.RequireAndVerifyClientCert
//     the server requires mutual TLS.
//  2. Optionally register other services on srv.GRPCServer() (same port).
//  3. Serve on a listener, in a goroutine you own: go srv.Serve(lis) (port
//     7400 by convention).
//  4. Accept channels: conn, err := srv.Accept(ctx). Server is a
//     channel.Listener. channel.Peer(conn) gives the peer's address and, with
//     mTLS, its verified client certificate. Run channel.AcceptHello on conn,
//     then channel.New(conn, handler, cfg).
//  5. Shut down: srv.Close() stops accepting (the health service turns
//     NOT_SERVING); close the channels (GOOD_BYE); then srv.GracefulStop(),
//     or srv.Stop() to cut every connection at once.
//
// On the connector:
//
//  1. Create the dialer once: d, err := grpcchannel.NewDialer("controller:7400",
//     grpcchannel.WithTLS(clientTLS)) (or WithInsecure() for tests). It holds
//     one gRPC ClientConn, reused by every Dial.
//  2. Dial for each (re)connection: conn, err := d.Dial(ctx). Dial fails
//     promptly, wrapping ErrUnavailable, when the controller cannot be
//     reached, so the caller can back off or fail over.
//  3. Run channel.Hello on conn, then channel.New(conn, handler, cfg).
//  4. At the end, close the channel, then d.Close().
//
// # Node-to-node links
//
// The controller nodes of a cluster talk to each other over the same port
// with a second service, exchange.v1.Cluster/Link, which carries the same
// frames and yields the same Conn, so one channel.Channel implementation
// serves connectors and peer nodes alike. It is not for connectors.
//
//  1. On a clustered node, links := srv.Links() enables the service and
//     returns its channel.Listener; until then every Link stream is refused
//     with UNIMPLEMENTED. links.Accept yields only Link streams, and
//     srv.Accept only Connect streams.
//  2. To reach a peer, d, err := grpcchannel.NewDialer(peerAddr,
//     grpcchannel.WithTLS(nodeTLS), grpcchannel.WithLinkService()); then
//     d.Dial(ctx) as for a connector.
//  3. links.Close() stops accepting links (UNAVAILABLE) without touching the
//     connector listener, and srv.Close() leaves links open; srv.Stop and
//     srv.GracefulStop close both.
//
// # Keepalive and limits
//
// Only the client pings a quiet connection: after 15 s without reading
// anything, dropping it 5 s after an unanswered ping. The server pings after
// 20 s without reading anything, which a live client on the defaults never
// lets happen. A half-open connection (a peer that vanished without closing)
// is thus detected by the client within 20 s and by the server within 25 s,
// and the Conn's Recv fails with channel.ErrClosed. The server tolerates
// client pings every 5 s, with or without streams, so clients on these
// defaults are never sent "too_many_pings". Frames are limited to 4 MiB each way (the encoded size of
// one exchange.v1.Frame): Send refuses a larger frame before writing anything,
// with an error wrapping channel.ErrFrameTooLarge, and the conn stays usable;
// a peer that sends one anyway has its stream ended with RESOURCE_EXHAUSTED.
// WithKeepalive and WithMaxFrameBytes change both.
//
// Before HELLO, a Server bounds what clients can hold (ServerLimits,
// WithLimits; docs/decisions/0014-pre-hello-limits.md): 16 streams per
// connection; as many connections as the file-descriptor limit allows less
// a reserve (ConnectionCapForFDLimit), 1,000 per source address (the first
// RPC on an excess connection fails at once with RESOURCE_EXHAUSTED and a
// 5 s RetryInfo); 4,000 handshakes in flight, 100 per source (the excess is
// refused at once with RESOURCE_EXHAUSTED, which Dial reports as
// ErrUnavailable and channel.ErrLimitExceeded: retry later; the refusal comes
// from the server's tap handle, before gRPC starts a handler for the stream,
// so that a flood of refused streams costs no goroutines); a stream that
// sends nothing for 5 s is ended; a connection that has not finished TLS and
// the HTTP/2 preface within 5 s, or has had no stream for 30 s, is closed.
// channel.AcceptHello marks a stream past HELLO, through
// channel.HandshakeCompleter.
//
// # Codec
//
// Frames are encoded and decoded by the package's own protobuf code, not by
// gRPC's reflection-driven proto codec (docs/decisions/0040): straight from
// and into channel.Frame, with the same bytes on the wire, so peers built
// from exchange.proto by any implementation interoperate. The Server and the
// Dialer force that codec (grpc.ForceServerCodecV2, grpc.ForceCodecV2); it
// hands every other message type to gRPC's proto codec. Two consequences:
// interceptors see the codec's own message types on Connect and Link
// streams, not *exchangepb.Frame; and services registered on GRPCServer must
// use protobuf (the content-subtype is not consulted). Received payloads, and
// strings, share the buffer of the message they came in.
//
// # Concurrency
//
// A Conn follows the gRPC stream rule, which is the channel.Conn contract: one
// goroutine may be in Send and another in Recv at the same time, but never two
// in Send or two in Recv. channel.Channel guarantees it with its single reader
// and one writer at a time; the package adds no lock around the stream. On
// the server, the Connect handler's goroutine runs the channel's read loop
// (channel.ReaderHost).
// Close and CloseWithError may be called from any goroutine, any number of
// times, and unblock Send and Recv. Server and Dialer are safe for concurrent
// use.
//
// # Goroutines
//
// The package starts no long-lived goroutine of its own. Each Connect or Link
// stream runs on a gRPC handler goroutine that blocks until its Conn is closed, the
// client goes away, or the server stops. gRPC's own goroutines belong to the
// grpc.Server (ended by Stop or GracefulStop) and the ClientConn (ended by
// Dialer.Close).
package grpcchannel
