package management

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrInsecureListener is returned by Serve when no token is configured and the
// listener is not bound to a loopback address.
var ErrInsecureListener = errors.New("management: without a token the API must listen on loopback only")

// Server is the management API. Create it with New; serve it with
// ListenAndServe, Listen and Serve, or mount Handler elsewhere.
type Server struct {
	cfg      Config
	log      *slog.Logger
	ex       Exchange
	batches  Batches
	gatherer prometheus.Gatherer
	tokens   [][sha256.Size]byte
	echo     *echo.Echo
	hub      *hub // nil without Config.Events
}

// New builds the server over ex (required), batches (nil: batch routes answer
// empty lists, 404 and 501; pass an untyped nil, not a nil *batch.Runner) and
// g, the metrics served on /metrics (nil: an empty registry). A
// *prometheus.Registry is a Gatherer.
func New(cfg Config, ex Exchange, batches Batches, g prometheus.Gatherer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ex == nil {
		return nil, errors.New("management: an Exchange is required")
	}
	if g == nil {
		g = prometheus.NewRegistry()
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, ex: ex, batches: batches, gatherer: g}
	if cfg.Events != nil {
		s.hub = newHub(ex, cfg.Events, cfg)
	}
	for _, t := range cfg.Tokens {
		s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.writeError
	e.Use(s.logRequests, s.crossSite, s.limitBody)
	s.echo = e
	s.routes()
	return s, nil
}

// Handler returns the API as an http.Handler, for tests and for embedding in
// another server. It applies the authentication, the cross-site checks
// (without a token, a Host other than localhost or a loopback address is
// refused) and the body limit, but the loopback rule is Listen's and
// Serve's: a caller serving Handler itself is responsible for where it
// listens.
func (s *Server) Handler() http.Handler { return s.echo }

// Listen opens the listener Serve needs, on Config.Addr. Without tokens, a
// non-loopback host is replaced by 127.0.0.1 and a warning is logged.
func (s *Server) Listen() (net.Listener, error) {
	addr, changed, err := bindAddr(s.cfg.Addr, len(s.tokens) > 0)
	if err != nil {
		return nil, err
	}
	if len(s.tokens) == 0 {
		s.log.Warn("management: no token configured: the management API is unauthenticated and listens on loopback only",
			"requested", s.cfg.Addr, "addr", addr, "rebound", changed)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("management: listen on %s: %w", addr, err)
	}
	return lis, nil
}

// ListenAndServe is Listen then Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	lis, err := s.Listen()
	if err != nil {
		return err
	}
	return s.Serve(ctx, lis)
}

// Serve serves the API on lis until ctx is done, then shuts down gracefully:
// it stops accepting, lets running requests finish for up to
// Config.ShutdownTimeout, then closes what is left. It closes lis and returns
// nil after a shutdown, or the error that stopped the server. Without tokens
// it refuses (ErrInsecureListener) a TCP listener not bound to loopback.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if len(s.tokens) == 0 && !isLoopback(lis.Addr()) {
		_ = lis.Close()
		return fmt.Errorf("%w (listener on %s)", ErrInsecureListener, lis.Addr())
	}
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// Requests keep running through a graceful shutdown, so their
		// context is not ctx; it tells crossSite which listener they came
		// in on.
		BaseContext: func(l net.Listener) context.Context {
			return context.WithValue(context.WithoutCancel(ctx), listenerKey{}, l.Addr())
		},
	}
	if s.hub != nil {
		// Event streams never end by themselves: the shutdown ends them,
		// so that it waits for no one.
		srv.RegisterOnShutdown(s.hub.close)
	}
	s.log.Info("management: serving", "addr", lis.Addr().String(), "auth", len(s.tokens) > 0)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- srv.Serve(lis) })
	defer wg.Wait()

	select {
	case err := <-errc:
		return fmt.Errorf("management: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("management: graceful shutdown timed out; closing connections", "err", err)
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("management: serve: %w", err)
	}
	return nil
}

// bindAddr returns the address to listen on: addr itself with tokens, else
// addr with any non-loopback host replaced by 127.0.0.1.
func bindAddr(addr string, authenticated bool) (string, bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("management: address %q: %w", addr, err)
	}
	if authenticated || isLoopbackHost(host) {
		return addr, false, nil
	}
	return net.JoinHostPort("127.0.0.1", port), true, nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isLoopback reports whether a listener address is loopback; non-TCP
// listeners (unix sockets, in-memory) are local by nature and accepted.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return true
	}
	return tcp.IP.IsLoopback()
}

// writeError is echo's error handler: every error becomes {"code","message"}
// with the status chosen by httpError.
func (s *Server) writeError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg, retryAfter := httpError(err)
	if retryAfter > 0 {
		c.Response().Header().Set(echo.HeaderRetryAfter, retryAfterSeconds(retryAfter))
	}
	if code >= http.StatusInternalServerError {
		s.log.Warn("management: request failed", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", code, "err", err)
	}
	if werr := writeJSON(c, code, ErrorBody{Code: code, Message: msg}); werr != nil {
		s.log.Debug("management: write error response", "err", werr)
	}
}

// writeJSON writes v as compact JSON with status code. Never indented: an
// indented document grows with the square of its nesting (a 200 KB reply
// nested thousands deep once made a 2 GB listing); pipe through jq to read.
//
// The document goes to the response in one write, from the encoder's own
// (pooled) buffer: json.Encoder encodes the whole value before it writes, so
// a value that cannot be encoded writes nothing, and the error handler still
// answers 500.
func writeJSON(c echo.Context, code int, v any) error {
	enc := json.NewEncoder(&responseWriter{c: c, code: code})
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("management: encode response: %w", err)
	}
	return nil
}

// responseWriter writes a JSON response's status and headers before its
// first byte (what echo's Blob does).
type responseWriter struct {
	c       echo.Context
	code    int
	started bool
}

func (w *responseWriter) Write(p []byte) (int, error) {
	r := w.c.Response()
	if !w.started {
		w.started = true
		if r.Header().Get(echo.HeaderContentType) == "" {
			r.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		}
		r.WriteHeader(w.code)
	}
	return r.Write(p)
}
