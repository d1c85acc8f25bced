package wschannel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/channel"
)

// Dialer is the connector side: each Dial opens one WebSocket connection to
// a controller and returns it as a channel.Conn speaking V1 frames (the
// handshake carries ProtocolHeader: v1).
type Dialer struct {
	// URL is the controller's endpoint: ws://, wss://, http:// or https://.
	// ControllerPath is appended unless the path already ends with it, so
	// "wss://controller:8062" and "https://host/root" (a path prefix) work as
	// the reference's connector endpoints do. One trailing '/' is ignored.
	URL string
	// Header holds extra handshake headers (authentication, say).
	Header http.Header
	// TLSConfig is used for wss:// and https:// URLs; nil means the system's
	// roots. Add Certificates for mTLS.
	TLSConfig *tls.Config
	// Config tunes the Conns.
	Config Config
}

var _ channel.Dialer = (*Dialer)(nil)

// String returns the URL the Dialer connects to, any password redacted; a
// connector names the endpoint by it in its logs.
func (d *Dialer) String() string {
	if u, err := url.Parse(d.URL); err == nil {
		return u.Redacted()
	}
	return d.URL
}

// Dial opens a connection. It fails when the URL is not a WebSocket or HTTP
// URL, when the controller cannot be reached, or when it refuses the upgrade
// (the HTTP status is in the error).
func (d *Dialer) Dial(ctx context.Context) (channel.Conn, error) {
	u, err := endpoint(d.URL)
	if err != nil {
		return nil, err
	}
	var (
		mu  sync.Mutex
		raw net.Conn
	)
	var nd net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				raw = c
				mu.Unlock()
			}
			return c, err
		},
		TLSClientConfig: http1Only(d.TLSConfig),
	}
	defer tr.CloseIdleConnections()
	h := d.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set(ProtocolHeader, ProtocolV1)
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: h})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("wschannel: dial %s: HTTP %s: %w", u, resp.Status, err)
		}
		return nil, fmt.Errorf("wschannel: dial %s: %w", u, err)
	}
	mu.Lock()
	c := raw
	mu.Unlock()
	cfg := d.Config.withDefaults()
	peer := channel.PeerInfo{Addr: c.RemoteAddr().String(), TLS: tlsState(resp.TLS)}
	return newConn(ws, c, "client", cfg, peer, connOptions{}), nil
}

// endpoint checks a Dialer's URL and appends ControllerPath to it.
func endpoint(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("wschannel: dial: bad URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return "", fmt.Errorf("wschannel: dial: URL %q: scheme must be ws, wss, http or https", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("wschannel: dial: URL %q has no host", raw)
	}
	p := strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(p, ControllerPath) {
		p += ControllerPath
	}
	u.Path, u.RawPath = p, ""
	return u.String(), nil
}

// http1Only returns a copy of cfg that offers only HTTP/1.1 over ALPN: the
// WebSocket upgrade needs it.
func http1Only(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}
