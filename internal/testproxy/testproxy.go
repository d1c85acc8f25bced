// Package testproxy is a real HTTP proxy for tests: it listens on loopback,
// tunnels CONNECT requests (the way HTTPS_PROXY is used for WebSocket and
// TLS), counts them and remembers their targets. It can require a
// Proxy-Authorization value, be spoken to over TLS, and resolve one host name
// to a loopback address: net/http and httpproxy never proxy "localhost" or
// loopback addresses, so tests name the server by a host name that only the
// proxy (and the test's own dialer) resolve.
package testproxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// Options configure a Proxy.
type Options struct {
	// Name is a host name the proxy resolves to Target when the CONNECT's
	// port is Target's; other hosts are dialled as given.
	Name, Target string
	// Auth, if set, is the Proxy-Authorization value required; a CONNECT
	// without it is answered 407.
	Auth string
	// TLS makes the proxy speak TLS (httptest's certificate).
	TLS bool
}

// Proxy is a running CONNECT proxy, closed with its tunnels when the test
// ends.
type Proxy struct {
	opts     Options
	srv      *httptest.Server
	connects atomic.Int32
	mu       sync.Mutex
	hosts    []string
	conns    []net.Conn
	wg       sync.WaitGroup
}

// Start starts a proxy for the duration of t.
func Start(t testing.TB, opts Options) *Proxy {
	t.Helper()
	p := &Proxy{opts: opts}
	if opts.TLS {
		p.srv = httptest.NewTLSServer(http.HandlerFunc(p.serve))
	} else {
		p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	}
	t.Cleanup(func() {
		p.srv.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// URL is the proxy's URL, for HTTPS_PROXY.
func (p *Proxy) URL() string { return p.srv.URL }

// Connects is how many CONNECT requests the proxy received.
func (p *Proxy) Connects() int { return int(p.connects.Load()) }

// Hosts returns the targets of the CONNECT requests received, in order.
func (p *Proxy) Hosts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.hosts)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "this proxy only tunnels (CONNECT)", http.StatusMethodNotAllowed)
		return
	}
	p.connects.Add(1)
	p.mu.Lock()
	p.hosts = append(p.hosts, r.Host)
	p.mu.Unlock()
	if p.opts.Auth != "" && r.Header.Get("Proxy-Authorization") != p.opts.Auth {
		w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	dst := r.Host
	if host, port, _ := net.SplitHostPort(r.Host); host == p.opts.Name && p.opts.Target != "" {
		if _, tport, _ := net.SplitHostPort(p.opts.Target); port == tport {
			dst = p.opts.Target
		}
	}
	up, err := net.Dial("tcp", dst)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	down, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = up.Close()
		return
	}
	_, _ = io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
	p.mu.Lock()
	p.conns = append(p.conns, up, down)
	p.mu.Unlock()
	p.wg.Go(func() { _, _ = io.Copy(up, down); _ = up.Close() })
	p.wg.Go(func() { _, _ = io.Copy(down, up); _ = down.Close() })
}
