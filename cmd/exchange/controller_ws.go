package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/exchangekit/exchange/channel/wschannel"
)

// wsTransport is the controller's WebSocket transport (--ws-addr): a
// wschannel.Server on its own http.Server.
type wsTransport struct {
	srv  *wschannel.Server
	http *http.Server
	lis  net.Listener
	tls  bool
}

// listenWS binds --ws-addr and prepares its server: TLS and mutual TLS are
// those of --grpc-addr (tlsCfg, nil for none), HTTP/1.1 only (the upgrade
// needs it). The limits before HELLO are those of --grpc-addr, counted
// apart: --max-connections and --max-connections-per-source bound the
// WebSocket connections (one per channel), --max-handshakes and
// --max-handshakes-per-source those not yet past HELLO, --handshake-timeout
// how long one may stay silent, --connection-timeout the TLS handshake and
// the request's headers, and --max-connection-idle a kept-alive connection
// that did not upgrade. --failed-hello-rate and --failed-hello-burst are the
// controller's, for every transport.
func listenWS(f controllerFlags, tlsCfg *tls.Config, log *slog.Logger) (*wsTransport, error) {
	srv := wschannel.NewServer(wsConfig(f.limits))
	lis, err := net.Listen("tcp", f.wsAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", f.wsAddr, err)
	}
	hs := &http.Server{
		Handler:        srv,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),        // TLS handshake failures of strangers
		TLSNextProto:   map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
	}
	if d := f.limits.connTimeout; d > 0 {
		hs.ReadHeaderTimeout = d
	}
	if d := f.limits.connIdle; d > 0 {
		hs.IdleTimeout = d // a kept-alive connection that did not upgrade
	}
	w := &wsTransport{srv: srv, http: hs, lis: lis}
	if tlsCfg != nil {
		c := tlsCfg.Clone()
		c.NextProtos = []string{"http/1.1"}
		hs.TLSConfig = c
		w.lis, w.tls = tls.NewListener(lis, c), true
	}
	return w, nil
}

// wsConfig maps the limit flags (negative: off) onto the WebSocket server's.
func wsConfig(l limitFlags) wschannel.Config {
	return wschannel.Config{
		MaxConnections:          max(l.conns, 0),
		MaxConnectionsPerSource: max(l.connsPerSrc, 0),
		MaxHandshakes:           max(l.handshakes, 0),
		MaxHandshakesPerSource:  max(l.handshakesPerSrc, 0),
		HandshakeTimeout:        max(l.handshakeTimeout, 0),
	}
}

// url is the endpoint connectors give as --controller.
func (w *wsTransport) url() string {
	scheme := "ws"
	if w.tls {
		scheme = "wss"
	}
	return scheme + "://" + w.lis.Addr().String()
}

// serve runs the http.Server until shutdown.
func (w *wsTransport) serve() error {
	if err := w.http.Serve(w.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("websocket server: %w", err)
	}
	return nil
}

// shutdown stops the http.Server once the controller is closed (which
// closed the wschannel.Server: upgrades not yet accepted are closed, new
// ones get 410). WebSocket connections are hijacked, so they are not the
// http.Server's: the controller has closed them already.
func (w *wsTransport) shutdown(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.http.Shutdown(ctx); err != nil {
		log.Warn("websocket server: shutdown", "err", err)
		_ = w.http.Close()
	}
}
