package wschannel

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/channel"
)

// The reference's HTTP surface (gravitee-exchange §3.1).
const (
	// ControllerPath is the path of the WebSocket endpoint on the controller.
	ControllerPath = "/exchange/controller"
	// LegacyPath is the legacy endpoint's path prefix: a Server serves
	// LegacyPath and every path under LegacyPath+"/", which default to the
	// LEGACY frames.
	LegacyPath = "/ws/controller"
	// ProtocolHeader is the handshake header by which a connector chooses the
	// frame protocol; there is no answer, the client's choice stands.
	ProtocolHeader = "X-Gravitee-Exchange-Protocol"
	// ProtocolV1 is ProtocolHeader's value for V1 frames.
	ProtocolV1 = "v1"
	// ProtocolLegacy is ProtocolHeader's value for LEGACY frames, which a
	// missing header and any value but ProtocolV1 mean too.
	ProtocolLegacy = "legacy"
)

// protocol is the frame protocol of a connection.
type protocol uint8

const (
	protoV1 protocol = iota
	protoLegacy
)

func (p protocol) String() string {
	if p == protoLegacy {
		return ProtocolLegacy
	}
	return ProtocolV1
}

// Protocol returns the frame protocol of the upgrade request r as the
// reference's controller chooses it (§3.1): ProtocolV1 when its
// ProtocolHeader says "v1" (letter case and surrounding spaces aside),
// ProtocolLegacy otherwise, the header missing included. The path does not
// change it: on LegacyPath the reference adds "legacy" after the client's
// own value, which comes first and wins.
func Protocol(r *http.Request) string { return requestProtocol(r).String() }

func requestProtocol(r *http.Request) protocol {
	if strings.EqualFold(strings.TrimSpace(r.Header.Get(ProtocolHeader)), ProtocolV1) {
		return protoV1
	}
	return protoLegacy
}

// BearerToken returns the token of r's "Authorization: Bearer <token>"
// header, or "".
func BearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// Server is the controller side: an http.Handler that upgrades requests on
// ControllerPath and LegacyPath to WebSocket connections, and a
// channel.Listener that hands them out. Mount it on an http.Server (TLS and
// mTLS are the http.Server's: PeerInfo then carries the connection state).
//
// The frame protocol is chosen by ProtocolHeader (see Protocol): V1 for
// "v1", LEGACY otherwise. The answers to requests that do not become
// connections: another path gets 404; once the Server is closed, 410 Gone,
// as the reference's stopping controller answers; a request that
// Config.Authenticate refuses, 401 with an empty body, as the reference's
// (§3.8); a request over a limit (Config.MaxHandshakes, MaxConnections and
// their per-source twins), 503 with Retry-After. An upgraded connection
// waits in ServeHTTP until Accept takes it.
//
// The bearer token of the upgrade request (BearerToken) is given to the
// connection's HELLO when the HELLO carries none, so that the controller's
// Authenticator judges it (reference connectors authenticate with a header;
// ours may too, see Dialer.Header).
type Server struct {
	cfg Config

	conns     chan *conn
	handshake chan struct{} // one token per connection in its handshake; nil: no limit
	mu        sync.Mutex
	open      int            // connections upgraded and not yet closed
	perSource map[string]int // connections open, by source
	hsSource  map[string]int // connections in their handshake, by source
	closeOnce sync.Once
	done      chan struct{}
}

var (
	_ channel.Listener = (*Server)(nil)
	_ http.Handler     = (*Server)(nil)
)

// NewServer returns a Server whose Conns use cfg.
func NewServer(cfg Config) *Server {
	s := &Server{cfg: cfg.withDefaults(), conns: make(chan *conn), done: make(chan struct{}),
		perSource: map[string]int{}, hsSource: map[string]int{}}
	if cfg.MaxHandshakes > 0 {
		s.handshake = make(chan struct{}, cfg.MaxHandshakes)
	}
	return s
}

// ServeHTTP upgrades a request on ControllerPath or LegacyPath and waits
// until Accept takes the connection, the Server is closed (the connection is
// then closed with 1001, going away), or the connection dies.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path != ControllerPath && r.URL.Path != LegacyPath && !strings.HasPrefix(r.URL.Path, LegacyPath+"/"):
		http.NotFound(w, r)
		return
	case s.isClosed():
		http.Error(w, "exchange controller is stopping", http.StatusGone)
		return
	}
	if a := s.cfg.Authenticate; a != nil {
		if err := a(r); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	peer := channel.PeerInfo{Addr: r.RemoteAddr, TLS: tlsState(r.TLS)}
	release, onClose, why := s.admit(peer.Source())
	if why != "" {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "exchange controller: "+why+"; retry later", http.StatusServiceUnavailable)
		return
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, nil) // answers the request itself on failure
	if err != nil {
		release()
		onClose()
		return
	}
	c := newConn(ws, hw.raw, "server", s.cfg, peer, connOptions{
		proto: requestProtocol(r), token: BearerToken(r), release: release, onClose: onClose})
	select {
	case s.conns <- c:
	case <-s.done:
		_ = c.closeWith(websocket.StatusGoingAway, "exchange controller is stopping")
	case <-c.readDone:
		_ = c.Close()
	}
}

// admit takes a connection slot and a handshake slot for a request from src;
// why says which limit refused it ("" when admitted). release frees the
// handshake slot, onClose the connection slot; each works once however
// often it is called.
func (s *Server) admit(src string) (release, onClose func(), why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.cfg.MaxConnections > 0 && s.open >= s.cfg.MaxConnections:
		return nil, nil, "too many connections"
	case s.cfg.MaxConnectionsPerSource > 0 && s.perSource[src] >= s.cfg.MaxConnectionsPerSource:
		return nil, nil, "too many connections from " + src
	case s.cfg.MaxHandshakesPerSource > 0 && s.hsSource[src] >= s.cfg.MaxHandshakesPerSource:
		return nil, nil, "too many connections in their handshake from " + src
	}
	if s.handshake != nil {
		select {
		case s.handshake <- struct{}{}:
		default:
			return nil, nil, "too many connections in their handshake"
		}
	}
	s.open++
	s.perSource[src]++
	s.hsSource[src]++
	release = sync.OnceFunc(func() {
		if s.handshake != nil {
			<-s.handshake
		}
		s.mu.Lock()
		decr(s.hsSource, src)
		s.mu.Unlock()
	})
	onClose = sync.OnceFunc(func() {
		release()
		s.mu.Lock()
		s.open--
		decr(s.perSource, src)
		s.mu.Unlock()
	})
	return release, onClose, ""
}

func decr(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
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
