package wschannel_test

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/wschannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/testproxy"
)

// The controller's name in these tests: not loopback (net/http and
// httpproxy never proxy "localhost" and loopback addresses), resolved to the
// test server's loopback address by the proxy and by the Dialer's
// NetDialer.
const controllerHost = "controller.test"

// newConnectProxy starts a real CONNECT proxy on loopback that resolves
// controllerHost:port to target.
func newConnectProxy(t *testing.T, target, auth string) *testproxy.Proxy {
	return startConnectProxy(t, target, auth, false)
}

// startConnectProxy starts the proxy, spoken to over TLS if useTLS (with
// httptest's certificate, the same as the test servers').
func startConnectProxy(t *testing.T, target, auth string, useTLS bool) *testproxy.Proxy {
	return testproxy.Start(t, testproxy.Options{Name: controllerHost, Target: target, Auth: auth, TLS: useTLS})
}

// setProxyEnv sets the proxy variables for the test, lower-case ones
// cleared.
func setProxyEnv(t *testing.T, httpProxy, httpsProxy, noProxy string) {
	for k, v := range map[string]string{"HTTP_PROXY": httpProxy, "HTTPS_PROXY": httpsProxy, "NO_PROXY": noProxy,
		"http_proxy": "", "https_proxy": "", "no_proxy": "", "REQUEST_METHOD": ""} {
		t.Setenv(k, v)
	}
}

// resolver is a NetDialer that resolves controllerHost to target and
// counts the direct connections to it.
func resolver(target string, direct *atomic.Int32) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		if host == controllerHost {
			direct.Add(1)
			_, tport, _ := net.SplitHostPort(target)
			if port == tport {
				addr = target
			}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// proxied starts a Server (TLS or not) and returns it, a Dialer for it by
// controllerHost, and the server's address.
func proxied(t *testing.T, useTLS bool) (*wschannel.Server, *wschannel.Dialer, string) {
	srv, d := startServer(t, useTLS, wschannel.Config{})
	target := strings.TrimPrefix(strings.TrimPrefix(d.URL, "https://"), "http://")
	_, port, _ := net.SplitHostPort(target)
	scheme := "ws://"
	if useTLS {
		scheme = "wss://"
		cfg := d.TLSConfig.Clone()
		cfg.ServerName = "example.com" // httptest's certificate names example.com and 127.0.0.1
		d.TLSConfig = cfg
	}
	d.URL = scheme + net.JoinHostPort(controllerHost, port)
	return srv, d, target
}

func roundTrip(t *testing.T, a, b channel.Conn) {
	t.Helper()
	if err := a.Send(cmdFrame("x", "X", `{"through":"proxy"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := b.Recv(); err != nil || f.Command == nil || f.Command.ID != "x" {
		t.Fatalf("Recv() = (%+v, %v)", f, err)
	}
}

// TestProxyFromEnvironment: with HTTP_PROXY (ws://) or HTTPS_PROXY (wss://)
// set, the Dialer goes through the proxy, a CONNECT tunnel; NO_PROXY and
// loopback controllers bypass it.
func TestProxyFromEnvironment(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := map[bool]string{false: "ws", true: "wss"}[useTLS]
		t.Run(name+" through the proxy", func(t *testing.T) {
			srv, d, target := proxied(t, useTLS)
			p := newConnectProxy(t, target, "")
			if useTLS {
				setProxyEnv(t, "http://wrong.invalid:1", p.URL(), "")
			} else {
				setProxyEnv(t, p.URL(), "http://wrong.invalid:1", "")
			}
			var direct atomic.Int32
			d.NetDialer = resolver(target, &direct)
			a, b := connect(t, srv, d)
			roundTrip(t, a, b)
			if n, hosts := p.Connects(), p.Hosts(); n != 1 || hosts[0] != strings.TrimPrefix(strings.TrimPrefix(d.URL, "wss://"), "ws://") {
				t.Errorf("proxy saw %d CONNECTs to %v, want 1 to the controller", n, hosts)
			}
			if n := direct.Load(); n != 0 {
				t.Errorf("%d direct connections to the controller, want 0", n)
			}
		})
		for _, noProxy := range []string{"other.test," + controllerHost, ".test", "*"} {
			t.Run(name+" NO_PROXY="+noProxy, func(t *testing.T) {
				srv, d, target := proxied(t, useTLS)
				p := newConnectProxy(t, target, "")
				setProxyEnv(t, p.URL(), p.URL(), noProxy)
				var direct atomic.Int32
				d.NetDialer = resolver(target, &direct)
				a, b := connect(t, srv, d)
				roundTrip(t, a, b)
				if n := p.Connects(); n != 0 {
					t.Errorf("proxy saw %d CONNECTs, want 0 (NO_PROXY)", n)
				}
				if n := direct.Load(); n != 1 {
					t.Errorf("%d direct connections to the controller, want 1", n)
				}
			})
		}
	}
	t.Run("lower-case https_proxy", func(t *testing.T) {
		srv, d, target := proxied(t, true)
		p := newConnectProxy(t, target, "")
		setProxyEnv(t, "", "", "")
		t.Setenv("https_proxy", p.URL())
		var direct atomic.Int32
		d.NetDialer = resolver(target, &direct)
		connect(t, srv, d)
		if n := p.Connects(); n != 1 || direct.Load() != 0 {
			t.Errorf("with https_proxy: %d CONNECTs, %d direct connections; want 1 and 0", n, direct.Load())
		}
	})
	t.Run("loopback is never proxied", func(t *testing.T) {
		srv, d := startServer(t, false, wschannel.Config{})
		p := newConnectProxy(t, "", "")
		setProxyEnv(t, p.URL(), p.URL(), "")
		connect(t, srv, d) // d.URL is http://127.0.0.1:port
		if n := p.Connects(); n != 0 {
			t.Errorf("proxy saw %d CONNECTs for a loopback controller, want 0", n)
		}
	})
	t.Run("NoProxy", func(t *testing.T) {
		srv, d, target := proxied(t, false)
		p := newConnectProxy(t, target, "")
		setProxyEnv(t, p.URL(), p.URL(), "")
		var direct atomic.Int32
		d.NetDialer, d.Proxy = resolver(target, &direct), wschannel.NoProxy
		connect(t, srv, d)
		if n := p.Connects(); n != 0 || direct.Load() != 1 {
			t.Errorf("with NoProxy: %d CONNECTs, %d direct connections; want 0 and 1", n, direct.Load())
		}
	})
}

// TestProxyAuthentication: the proxy URL's user goes in Proxy-Authorization;
// a proxy's refusal fails Dial with its status.
func TestProxyAuthentication(t *testing.T) {
	srv, d, target := proxied(t, false)
	p := newConnectProxy(t, target, "Basic "+base64.StdEncoding.EncodeToString([]byte("user:p@ss")))
	var direct atomic.Int32
	d.NetDialer = resolver(target, &direct)

	setProxyEnv(t, strings.Replace(p.URL(), "http://", "http://user:wrong@", 1), "", "")
	if c, err := d.Dial(testContext(t)); err == nil || !strings.Contains(err.Error(), "407") || strings.Contains(err.Error(), "wrong") {
		if c != nil {
			_ = c.Close()
		}
		t.Errorf("Dial() with a wrong proxy password = %v, want the 407, the password redacted", err)
	}
	setProxyEnv(t, strings.Replace(p.URL(), "http://", "http://user:p%40ss@", 1), "", "")
	a, b := connect(t, srv, d)
	roundTrip(t, a, b)
	if n := p.Connects(); n != 2 {
		t.Errorf("proxy saw %d CONNECTs, want 2", n)
	}
}

// TestDialerHeaderThroughProxy: custom headers travel inside the tunnel to
// the controller.
func TestDialerHeaderThroughProxy(t *testing.T) {
	srv, d, target := proxied(t, true)
	p := newConnectProxy(t, target, "")
	setProxyEnv(t, "", p.URL(), "")
	var direct atomic.Int32
	d.NetDialer = resolver(target, &direct)
	d.Header = http.Header{"Authorization": {"Bearer tok"}}
	a, b := connect(t, srv, d)
	if err := a.Send(cmdFrame("h", command.TypeHello, `{"targetId":"t"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := b.Recv(); err != nil || string(f.Command.Payload) != `{"targetId":"t","token":"tok"}` {
		t.Errorf("HELLO through the proxy = (%+v, %v), want the bearer token in it", f, err)
	}
}

// TestHTTPSProxy: a proxy whose URL is https:// is spoken to over TLS,
// verified with the Dialer's roots; the tunnel then carries the controller's
// own TLS.
func TestHTTPSProxy(t *testing.T) {
	srv, d, target := proxied(t, true)
	p := startConnectProxy(t, target, "", true)
	if !strings.HasPrefix(p.URL(), "https://") {
		t.Fatalf("proxy URL %s, want https://", p.URL())
	}
	setProxyEnv(t, "", p.URL(), "")
	var direct atomic.Int32
	d.NetDialer = resolver(target, &direct)
	a, b := connect(t, srv, d)
	roundTrip(t, a, b)
	if n := p.Connects(); n != 1 || direct.Load() != 0 {
		t.Errorf("%d CONNECTs through the https proxy, %d direct connections; want 1 and 0", n, direct.Load())
	}
}
