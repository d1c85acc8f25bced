package management

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// crossSiteRequest is one request of TestCrossSite; host "" keeps the
// server's own address.
type crossSiteRequest struct {
	name        string
	tokens      bool // send to the server with a token, and send the token
	method      string
	path        string
	host        string
	origin      []string // nil: no Origin header
	contentType string   // "" with a body: none at all
	body        string
	want        int
	golden      string
}

// TestCrossSite sends what a web page of another site can make a browser
// send, through real HTTP: simple (text/plain, form) writes, requests for a
// rebound host name, and cross-origin requests.
func TestCrossSite(t *testing.T) {
	open := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), newFakeBatches()))
	authed := serveHTTP(t, newServer(t, Config{Tokens: []string{"s3cret"}}, newFakeExchange(), newFakeBatches()))
	port := func(ts *httptest.Server) string { u, _ := url.Parse(ts.URL); return u.Port() }
	p := port(open)
	cmd := `{"id":"cmd-1","type":"ECHO"}`
	batchBody := `{"targetId":"t2","commands":[{"type":"START"}]}`
	tests := []crossSiteRequest{
		// Content-Type of writes.
		{name: "text/plain command", method: "POST", path: "/exchange/targets/t1/commands", contentType: "text/plain", body: cmd, want: 415, golden: "cross_site_content_type"},
		{name: "text/plain batch", method: "POST", path: "/exchange/batchs", contentType: "text/plain;charset=UTF-8", body: batchBody, want: 415},
		{name: "form batch", method: "POST", path: "/exchange/batches", contentType: "application/x-www-form-urlencoded", body: "targetId=t2", want: 415},
		{name: "multipart batch", method: "POST", path: "/exchange/batchs", contentType: "multipart/form-data; boundary=x", body: batchBody, want: 415},
		{name: "no content type", method: "POST", path: "/exchange/batchs", body: batchBody, want: 415},
		{name: "json lookalike", method: "POST", path: "/exchange/batchs", contentType: "application/jsonx", body: batchBody, want: 415},
		{name: "text/plain with a token", tokens: true, method: "POST", path: "/exchange/targets/t1/commands", contentType: "text/plain", body: cmd, want: 415},
		{name: "json", method: "POST", path: "/exchange/targets/t1/commands", contentType: "application/json", body: cmd, want: 200},
		{name: "json with charset", method: "POST", path: "/exchange/batchs", contentType: "application/json; charset=utf-8", body: `{"id":"b-charset","targetId":"t2","commands":[{"type":"START"}]}`, want: 201},
		{name: "json in capitals", method: "POST", path: "/exchange/targets/t1/commands", contentType: "Application/JSON", body: cmd, want: 200},
		{name: "post without a body", method: "POST", path: "/exchange/targets/t1/commands", want: 400},
		// Host (DNS rebinding) without a token.
		{name: "rebound host", path: "/exchange/targets", host: "attacker.example:" + p, want: 421, golden: "cross_site_host"},
		{name: "rebound host without port", path: "/exchange/cluster", host: "attacker.example", want: 421},
		{name: "loopback lookalike", path: "/exchange/targets", host: "127.0.0.1.nip.io:" + p, want: 421},
		{name: "private address", path: "/exchange/targets", host: "192.168.1.10:" + p, want: 421},
		{name: "rebound host on a probe", path: "/readyz", host: "attacker.example", want: 421},
		{name: "localhost", path: "/exchange/targets", host: "localhost:" + p, want: 200},
		{name: "localhost, any case, fully qualified", path: "/exchange/targets", host: "LocalHost.:" + p, want: 200},
		{name: "127.0.0.0/8", path: "/exchange/targets", host: "127.1.2.3:" + p, want: 200},
		{name: "ipv6 loopback", path: "/exchange/targets", host: "[::1]:" + p, want: 200},
		{name: "any host with a token", tokens: true, path: "/exchange/targets", host: "exchange.internal:7480", want: 200},
		// Origin.
		{name: "other origin", path: "/exchange/targets", origin: []string{"http://attacker.example"}, want: 403, golden: "cross_site_origin"},
		{name: "null origin", path: "/exchange/targets", origin: []string{"null"}, want: 403},
		{name: "empty origin", path: "/exchange/targets", origin: []string{""}, want: 403},
		{name: "other port", path: "/exchange/targets", origin: []string{"http://127.0.0.1:1"}, want: 403},
		{name: "other loopback name", path: "/exchange/targets", origin: []string{"http://localhost:" + p}, want: 403},
		{name: "other origin on a json write", method: "POST", path: "/exchange/batchs", origin: []string{"http://attacker.example"}, contentType: "application/json", body: batchBody, want: 403},
		{name: "other origin with a token", tokens: true, path: "/exchange/targets", origin: []string{"https://attacker.example"}, want: 403},
		{name: "two origins", path: "/exchange/targets", origin: []string{"http://127.0.0.1:" + p, "http://attacker.example"}, want: 403},
		{name: "same origin", path: "/exchange/targets", origin: []string{"http://127.0.0.1:" + p}, want: 200},
		{name: "same origin write", method: "POST", path: "/exchange/targets/t1/commands", origin: []string{"http://127.0.0.1:" + p}, contentType: "application/json", body: cmd, want: 200},
		{name: "same origin with https, behind a proxy", tokens: true, path: "/exchange/targets", host: "exchange.example.com", origin: []string{"https://exchange.example.com"}, want: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := open
			if tc.tokens {
				ts = authed
			}
			resp, body := crossSiteDo(t, ts, tc)
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tc.want, body)
			}
			if tc.want >= 400 {
				checkErrorBody(t, body, tc.want)
			}
			if tc.golden != "" {
				checkGolden(t, tc.golden, []byte(strings.ReplaceAll(string(body), p, "PORT")))
			}
		})
	}
}

func crossSiteDo(t *testing.T, ts *httptest.Server, tc crossSiteRequest) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	method := tc.method
	if method == "" {
		method = http.MethodGet
	}
	var r io.Reader
	if tc.body != "" {
		r = strings.NewReader(tc.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, ts.URL+tc.path, r)
	if err != nil {
		t.Fatal(err)
	}
	if tc.host != "" {
		req.Host = tc.host
	}
	if tc.origin != nil {
		req.Header["Origin"] = tc.origin
	}
	if tc.contentType != "" {
		req.Header.Set("Content-Type", tc.contentType)
	}
	if tc.tokens {
		req.Header.Set("Authorization", "Bearer s3cret")
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, tc.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestHostAllowedListener checks the listener rules: exactly the address of
// the listener the request came in on, and any Host on a listener that is
// not TCP.
func TestHostAllowedListener(t *testing.T) {
	t.Parallel()
	withListener := func(host string, a net.Addr) *http.Request {
		r := httptest.NewRequest("GET", "/exchange/targets", nil)
		r.Host = host
		if a != nil {
			r = r.WithContext(context.WithValue(r.Context(), listenerKey{}, a))
		}
		return r
	}
	tcp := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7480}
	unix := &net.UnixAddr{Name: "/run/exchange.sock", Net: "unix"}
	tests := []struct {
		r    *http.Request
		want bool
	}{
		{withListener("10.0.0.1:7480", tcp), true},
		{withListener("10.0.0.1:7481", tcp), false},
		{withListener("10.0.0.1", tcp), false},
		{withListener("anything", unix), true},
		{withListener("anything", nil), false},
		{withListener("", nil), false},
		{withListener("[::1]", nil), true},
		{withListener("::1", nil), true},
	}
	for _, tc := range tests {
		if got := hostAllowed(tc.r); got != tc.want {
			t.Errorf("hostAllowed(Host %q, listener %v) = %v, want %v", tc.r.Host, tc.r.Context().Value(listenerKey{}), got, tc.want)
		}
	}
}

// TestServeRefusesReboundHost serves on a real loopback listener: its own
// address is accepted, a rebound Host refused.
func TestServeRefusesReboundHost(t *testing.T) {
	s := newServer(t, Config{Addr: "127.0.0.1:0"}, newFakeExchange(), nil)
	lis, err := s.Listen()
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	}()
	ts := &httptest.Server{URL: "http://" + lis.Addr().String()}
	if resp, body := crossSiteDo(t, ts, crossSiteRequest{path: "/exchange/cluster"}); resp.StatusCode != 200 {
		t.Errorf("own address: status %d, body %s", resp.StatusCode, body)
	}
	if resp, body := crossSiteDo(t, ts, crossSiteRequest{path: "/exchange/cluster", host: "attacker.example"}); resp.StatusCode != 421 {
		t.Errorf("rebound host: status %d, want 421; body %s", resp.StatusCode, body)
	}
}
