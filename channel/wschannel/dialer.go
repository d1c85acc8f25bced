package wschannel

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http/httpproxy"

	"github.com/exchangekit/exchange/channel"
)

// Dialer is the connector side: each Dial opens one WebSocket connection to
// a controller and returns it as a channel.Conn speaking V1 frames (the
// handshake carries ProtocolHeader: v1).
//
// # Proxies
//
// By default a Dialer goes through the HTTP(S) proxy the environment names,
// read at every Dial: HTTPS_PROXY for wss:// and https:// URLs, HTTP_PROXY
// for ws:// and http:// ones, except for the hosts NO_PROXY lists (the rules
// of golang.org/x/net/http/httpproxy, which are net/http's; lower-case names
// too). As in net/http, a controller at "localhost" or a loopback address
// is never proxied. The connection is always a CONNECT tunnel through the
// proxy (for ws:// too: a proxy forwards an upgrade request it does not
// tunnel badly), with Proxy-Authorization (Basic) when the proxy URL has a
// user; the proxy's URL may be http:// or https://. Set Proxy to choose
// another way, or to turn proxies off.
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
	// Proxy returns the proxy for a request to the controller (nil: none).
	// nil means ProxyFromEnvironment; NoProxy turns proxies off.
	Proxy func(*http.Request) (*url.URL, error)
	// NetDialer opens TCP connections (to the controller, or to the proxy);
	// nil means a net.Dialer.
	NetDialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// ProxyFromEnvironment returns the proxy the environment names for req (see
// Dialer), reading the variables at each call.
func ProxyFromEnvironment(req *http.Request) (*url.URL, error) {
	return httpproxy.FromEnvironment().ProxyFunc()(req.URL)
}

// NoProxy is a Dialer.Proxy that never uses a proxy.
func NoProxy(*http.Request) (*url.URL, error) { return nil, nil }

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
	proxy := d.Proxy
	if proxy == nil {
		proxy = ProxyFromEnvironment
	}
	pu, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("wschannel: dial: bad URL: %w", err)
	}
	// The proxy sees the request as an http(s):// one, as net/http does.
	probe := &http.Request{Method: http.MethodGet, URL: httpURL(pu), Header: http.Header{}}
	via, err := proxy(probe)
	if err != nil {
		return nil, fmt.Errorf("wschannel: dial %s: proxy: %w", u, err)
	}
	dial := d.NetDialer
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	tr := &http.Transport{
		Proxy: nil, // tunnelled by DialContext below
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var (
				c   net.Conn
				err error
			)
			if via != nil {
				c, err = dialTunnel(ctx, dial, via, addr, d.TLSConfig)
			} else {
				c, err = dial(ctx, network, addr)
			}
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
		if via != nil {
			err = fmt.Errorf("through proxy %s: %w", via.Redacted(), err)
		}
		if resp != nil {
			if after, ok := retryAfter(resp); ok {
				// A busy controller (its connection or handshake limits):
				// the same refusal, with the hint, as the gRPC twin's.
				return nil, fmt.Errorf("wschannel: dial %s: %w", u,
					&channel.LimitError{Detail: "HTTP " + resp.Status, RetryAfter: after})
			}
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

// httpURL returns u with its ws(s) scheme as http(s).
func httpURL(u *url.URL) *url.URL {
	cp := *u
	switch cp.Scheme {
	case "ws":
		cp.Scheme = "http"
	case "wss":
		cp.Scheme = "https"
	}
	return &cp
}

// dialTunnel opens a CONNECT tunnel to addr through the proxy at via: TCP
// to the proxy (TLS too for an https:// proxy, verified with tlsCfg's
// roots), "CONNECT addr", a 2xx answer. The tunnel is returned; TLS to the
// controller, if any, is the caller's.
func dialTunnel(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), via *url.URL, addr string, tlsCfg *tls.Config) (net.Conn, error) {
	paddr := via.Host
	if via.Port() == "" {
		if via.Scheme == "https" {
			paddr = net.JoinHostPort(via.Hostname(), "443")
		} else {
			paddr = net.JoinHostPort(via.Hostname(), "80")
		}
	}
	c, err := dial(ctx, "tcp", paddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", via.Redacted(), err)
	}
	if via.Scheme == "https" {
		var cfg *tls.Config
		if tlsCfg != nil {
			cfg = &tls.Config{RootCAs: tlsCfg.RootCAs, MinVersion: tls.VersionTLS12}
		} else {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		cfg.ServerName = via.Hostname()
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("proxy %s: TLS: %w", via.Redacted(), err)
		}
		c = tc
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := via.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT: %w", via.Redacted(), err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT: %w", via.Redacted(), err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		_ = c.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %s", via.Redacted(), addr, resp.Status)
	}
	if !stop() {
		_ = c.Close()
		return nil, ctx.Err()
	}
	if br.Buffered() > 0 { // the proxy spoke first after its answer: keep those bytes
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn is a net.Conn whose first bytes were read ahead.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

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

// retryAfter returns the delay a 503 Service Unavailable answer asks for in
// its Retry-After header (in seconds; the HTTP-date form is not used by our
// controllers and is ignored), if any.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	secs, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After")))
	if err != nil || secs <= 0 {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}
