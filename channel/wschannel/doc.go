// Package wschannel is the WebSocket twin of the channel transport, wire
// compatible with the reference system's connectors and controllers
// (gravitee-exchange): one WebSocket connection per channel, on the path
// /exchange/controller (or the legacy /ws/controller/*), each message one
// frame in one of the reference's two formats, chosen by the connector's
// X-Gravitee-Exchange-Protocol header ("v1"; anything else, or none, is
// LEGACY, see Protocol). V1:
//
//	t:COMMAND;;et:HELLO;;e:{"id":"…","type":"HELLO","payload":{"targetId":"…"}}
//	t:REPLY;;et:HELLO;;e:{"commandId":"…","type":"HELLO","commandStatus":"SUCCEEDED","payload":{…}}
//
// (AppendFrame and DecodeFrame are the codec), and LEGACY:
//
//	command: {"id":"…","type":"HELLO_COMMAND","payload":{"node":{"installationId":"…"}}}
//	reply: {"commandId":"…","type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":"…"}}
//	primary: true
//
// (AppendLegacyFrame and DecodeLegacyFrame, with the reference's legacy
// adaptations of HELLO, GOOD_BYE, PRIMARY and NO_REPLY). Messages are sent
// binary, as the reference requires; a text message is refused as the
// reference refuses it, with 1003 "Unsupported text frame".
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
// # Legacy peers
//
// A legacy connector never answers PRIMARY nor HEALTH_CHECK, and cannot be
// asked to reconnect. A server Conn on a legacy connection therefore answers
// for it (reference §3.4): PRIMARY goes out as "primary: true" or "replica:
// true" (without its epoch) and is answered SUCCEEDED at once; HEALTH_CHECK
// is not written at all but answered by a WebSocket ping: healthy when the
// pong comes in time, unhealthy otherwise (the controller then evicts the
// channel, as for any unhealthy one); GOOD_BYE{reconnect:true} closes the
// connection with 1013 instead. A handler error goes out as IGNORED_REPLY,
// which comes back as NO_REPLY (a *channel.RemoteError). The token of the
// upgrade request's "Authorization: Bearer" header is given to a HELLO that
// carries none, in both protocols, so the controller's Authenticator judges
// it; Config.Authenticate can refuse an upgrade with 401 besides, as the
// reference's authentication does (§3.8).
//
// Close codes: 1000 normal (and a connector's close after GOOD_BYE without
// reconnection), 1002 a frame that does not decode, or a first frame that is
// not HELLO ("Hello Command is first expected to initialize the exchange
// channel"), or no HELLO within Config.HandshakeTimeout, 1003 a text
// message, 1009 a message over the limit, 1011 any other failure, 1013 a
// limit of the peer (reason naming channel.ErrLimitExceeded) or a GOOD_BYE
// asking to reconnect ("GoodBye Command with reconnection requested."), 1001
// a Server that stopped before accepting the connection. Unlike the
// reference, a malformed frame is never dropped silently (the connection
// closes with 1002 and the reason), and a failing handler does not close the
// connection (its command gets NO_REPLY).
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
// On the connector (V1 only; the legacy frames are for the reference's old
// connectors):
//
//	d := &wschannel.Dialer{URL: "wss://controller:8062", Header: authHeader, TLSConfig: tlsCfg}
//	conn, err := d.Dial(ctx) // then channel.Hello, channel.New
//
// A Dialer goes through the proxy the environment names (HTTPS_PROXY,
// HTTP_PROXY, NO_PROXY), always as a CONNECT tunnel; see Dialer.
//
// Each end pings the other every Config.PingInterval (5 s, as the reference)
// and drops a connection whose pong is late by Config.PongTimeout (the
// reference has no pong timeout, weakness 19).
package wschannel
