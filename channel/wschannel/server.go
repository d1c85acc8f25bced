package wschannel

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/channel"
)

// The reference's HTTP surface (gravitee-exchange §3.1).
const (
	// ControllerPath is the path of the WebSocket endpoint on the controller.
	ControllerPath = "/exchange/controller"
	// ProtocolHeader is the handshake header by which a connector chooses the
	// frame protocol; there is no answer, the client's choice stands.
	ProtocolHeader = "X-Gravitee-Exchange-Protocol"
	// ProtocolV1 is ProtocolHeader's value for V1 frames, the only protocol
	// this package speaks so far.
	ProtocolV1 = "v1"
)

// Server is the controller side: an http.Handler that upgrades requests on
// ControllerPath to WebSocket connections, and a channel.Listener that hands
// them out. Mount it on an http.Server (TLS and mTLS are the http.Server's:
// PeerInfo then carries the connection state).
//
// A request on another path gets 404; one that does not ask for V1 frames
// (ProtocolHeader missing, or "legacy") gets 400, since the legacy frames are
// not implemented; once the Server is closed, requests get 410 Gone, as the
// reference's stopping controller answers; with Config.MaxHandshakes
// connections already in their handshake, requests get 503 with
// Retry-After. An upgraded connection waits in
// ServeHTTP until Accept takes it.
type Server struct {
	cfg Config

	conns     chan *conn
	handshake chan struct{} // one token per connection in its handshake; nil: no limit
	closeOnce sync.Once
	done      chan struct{}
}

var (
	_ channel.Listener = (*Server)(nil)
	_ http.Handler     = (*Server)(nil)
)

// NewServer returns a Server whose Conns use cfg.
func NewServer(cfg Config) *Server {
	s := &Server{cfg: cfg.withDefaults(), conns: make(chan *conn), done: make(chan struct{})}
	if cfg.MaxHandshakes > 0 {
		s.handshake = make(chan struct{}, cfg.MaxHandshakes)
	}
	return s
}

// ServeHTTP upgrades a request on ControllerPath and waits until Accept takes
// the connection, the Server is closed (the connection is then closed with
// 1001, going away), or the connection dies.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path != ControllerPath:
		http.NotFound(w, r)
		return
	case s.isClosed():
		http.Error(w, "exchange controller is stopping", http.StatusGone)
		return
	case r.Header.Get(ProtocolHeader) != ProtocolV1:
		http.Error(w, fmt.Sprintf("unsupported exchange protocol %q: only %s=%s is supported", r.Header.Get(ProtocolHeader), ProtocolHeader, ProtocolV1), http.StatusBadRequest)
		return
	}
	release, ok := s.acquireHandshake()
	if !ok {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "exchange controller: too many connections in their handshake; retry later", http.StatusServiceUnavailable)
		return
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, nil) // answers the request itself on failure
	if err != nil {
		release()
		return
	}
	peer := channel.PeerInfo{Addr: r.RemoteAddr, TLS: tlsState(r.TLS)}
	c := newConn(ws, hw.raw, "server", s.cfg, peer, release)
	select {
	case s.conns <- c:
	case <-s.done:
		_ = c.closeWith(websocket.StatusGoingAway, "exchange controller is stopping")
	case <-c.readDone:
		_ = c.Close()
	}
}

// Accept waits for the next connection. It fails with an error wrapping
// channel.ErrClosed once the Server is closed, or with ctx's error.
func (s *Server) Accept(ctx context.Context) (channel.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, fmt.Errorf("wschannel: accept: %w", channel.ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("wschannel: accept: %w", context.Cause(ctx))
	}
}

// Close stops accepting: connections not yet accepted are closed (1001) and
// new requests get 410. Connections already accepted stay open.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}

// acquireHandshake takes a slot among the connections in their handshake
// (Config.MaxHandshakes); ok is false when none is free. release frees it,
// once however often it is called.
func (s *Server) acquireHandshake() (release func(), ok bool) {
	if s.handshake == nil {
		return func() {}, true
	}
	select {
	case s.handshake <- struct{}{}:
		return sync.OnceFunc(func() { <-s.handshake }), true
	default:
		return nil, false
	}
}

func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// hijackWriter records the connection the WebSocket library hijacks, so that
// a close handshake that stalls can be cut short.
type hijackWriter struct {
	http.ResponseWriter
	raw net.Conn
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	w.raw = c
	return c, brw, err
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
