// Package wschannel is the WebSocket twin of the channel transport, wire
// compatible with the reference system's connectors and controllers
// (gravitee-exchange): one WebSocket connection per channel, on the path
// /exchange/controller, each message one frame in the reference's V1 format
//
//	t:COMMAND;;et:HELLO;;e:{"id":"…","type":"HELLO","payload":{"targetId":"…"}}
//	t:REPLY;;et:HELLO;;e:{"commandId":"…","type":"HELLO","commandStatus":"SUCCEEDED","payload":{…}}
//
// (AppendFrame and DecodeFrame are the codec). Messages are sent binary, as
// the reference requires (it closes on a text message with 1003); text and
// binary messages are both accepted.
//
// Like channel/embedded and channel/grpcchannel, it provides the two ends of
// a channel.Conn and nothing else: the semantics live once in
// channel.Channel, and the conformance suite channel/channeltest passes over
// this package too. Errors are the channel package's: a closed connection is
// channel.ErrClosed, a frame that does not decode channel.ErrMalformedFrame,
// a frame over the limit channel.ErrFrameTooLarge; WebSocket close codes stay
// in this package (see conn.CloseWithError for the mapping).
//
// # What V1 cannot carry
//
// The reference's envelopes have no field for a command's one-way flag,
// timeout and metadata, nor for a reply's retry-after and code, nor for a
// payload that is not JSON. They travel in extra envelope properties
// (oneWay, timeoutMs, metadata; retryAfterMs, code; payloadText,
// payloadBase64), which the reference ignores, as it ignores every unknown
// property; see AppendFrame. Between two Exchange peers nothing is lost. A
// reference peer sees the commands without them: it answers one-way commands
// (the Channel drops the unexpected reply), and it does not bound its
// handlers by the sender's timeout. Batch frames do not exist in V1: the Conn
// is not a channel.BatchSender, so channels over it never coalesce.
//
// # Usage
//
// On the controller, mount a Server on an http.Server you own (its TLS
// config decides TLS and mTLS; the peer's certificate is in
// channel.Peer(conn).TLS), and accept channels from it:
//
//	srv := wschannel.NewServer(wschannel.Config{})
//	go httpServer.Serve(lis) // httpServer.Handler = srv, or a mux holding it
//	conn, err := srv.Accept(ctx) // then channel.AcceptHello, channel.New
//
// On the connector:
//
//	d := &wschannel.Dialer{URL: "wss://controller:8062", Header: authHeader, TLSConfig: tlsCfg}
//	conn, err := d.Dial(ctx) // then channel.Hello, channel.New
//
// Each end pings the other every Config.PingInterval (5 s, as the reference)
// and drops a connection whose pong is late by Config.PongTimeout.
//
// Not yet: the legacy frames ("command: …", "reply: …", the /ws/controller
// path), proxies.
package wschannel
