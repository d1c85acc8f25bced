package management

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/controller"
)

func TestAuth(t *testing.T) {
	s := newServer(t, Config{Tokens: []string{"s3cret", "rotated-token"}}, newFakeExchange(), newFakeBatches())
	ts := serveHTTP(t, s)
	bearer := func(v string) http.Header { return http.Header{"Authorization": {v}} }
	tests := []struct {
		name   string
		method string
		path   string
		header http.Header
		want   int
	}{
		{"missing token", "GET", "/exchange/targets", nil, 401},
		{"wrong token", "GET", "/exchange/targets", bearer("Bearer nope"), 401},
		{"token prefix", "GET", "/exchange/targets", bearer("Bearer s3cre"), 401},
		{"token extended", "GET", "/exchange/targets", bearer("Bearer s3crets"), 401},
		{"not bearer", "GET", "/exchange/targets", bearer("Basic czNjcmV0"), 401},
		{"bare token", "GET", "/exchange/targets", bearer("s3cret"), 401},
		{"right token", "GET", "/exchange/targets", bearer("Bearer s3cret"), 200},
		{"second token, scheme in lower case", "GET", "/exchange/targets", bearer("bearer rotated-token"), 200},
		{"command without token", "POST", "/exchange/targets/t1/commands", nil, 401},
		{"batch post without token", "POST", "/exchange/batchs", nil, 401},
		{"cluster without token", "GET", "/exchange/cluster", nil, 401},
		{"metrics without token", "GET", "/metrics", nil, 401},
		{"metrics with token", "GET", "/metrics", bearer("Bearer s3cret"), 200},
		{"healthz is open", "GET", "/healthz", nil, 200},
		{"readyz is open", "GET", "/readyz", nil, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if tc.method == "POST" {
				body = `{"id":"cmd-1","type":"ECHO"}`
			}
			resp, got := do(t, ts, tc.method, tc.path, body, tc.header)
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tc.want, got)
			}
			if tc.want != 401 {
				return
			}
			checkErrorBody(t, got, 401)
			checkGolden(t, "unauthorized", got)
			if h := resp.Header.Get("WWW-Authenticate"); h != `Bearer realm="exchange"` {
				t.Errorf("WWW-Authenticate = %q", h)
			}
		})
	}
}

func TestBindAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr          string
		authenticated bool
		want          string
		changed       bool
	}{
		{":7480", false, "127.0.0.1:7480", true},
		{"0.0.0.0:7480", false, "127.0.0.1:7480", true},
		{"[::]:7480", false, "127.0.0.1:7480", true},
		{"10.1.2.3:7480", false, "127.0.0.1:7480", true},
		{"example.com:7480", false, "127.0.0.1:7480", true},
		{"127.0.0.1:7480", false, "127.0.0.1:7480", false},
		{"127.0.0.2:7480", false, "127.0.0.2:7480", false},
		{"[::1]:7480", false, "[::1]:7480", false},
		{"localhost:7480", false, "localhost:7480", false},
		{":7480", true, ":7480", false},
		{"0.0.0.0:7480", true, "0.0.0.0:7480", false},
	}
	for _, tc := range tests {
		got, changed, err := bindAddr(tc.addr, tc.authenticated)
		if err != nil || got != tc.want || changed != tc.changed {
			t.Errorf("bindAddr(%q, %v) = %q, %v, %v; want %q, %v, nil", tc.addr, tc.authenticated, got, changed, err, tc.want, tc.changed)
		}
	}
	if _, _, err := bindAddr("no-port", false); err == nil {
		t.Error("bindAddr(no-port) = nil error, want one")
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestListenWithoutTokenBindsLoopbackAndWarns(t *testing.T) {
	var logs syncBuffer
	s := newServer(t, Config{Addr: "0.0.0.0:0", Logger: slog.New(slog.NewTextHandler(&logs, nil))}, newFakeExchange(), nil)
	lis, err := s.Listen()
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	defer lis.Close()
	tcp, ok := lis.Addr().(*net.TCPAddr)
	if !ok || !tcp.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("listener address = %v, want 127.0.0.1:port", lis.Addr())
	}
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "loopback only") ||
		!strings.Contains(got, "requested=0.0.0.0:0") {
		t.Errorf("start-up log = %q, want a warning about loopback-only binding", got)
	}
}

func TestListenWithTokenKeepsAddrAndDoesNotWarn(t *testing.T) {
	var logs syncBuffer
	s := newServer(t, Config{Addr: "127.0.0.1:0", Tokens: []string{"t"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, newFakeExchange(), nil)
	lis, err := s.Listen()
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	defer lis.Close()
	if got := logs.String(); strings.Contains(got, "WARN") {
		t.Errorf("log = %q, want no warning", got)
	}
}

// fakeListener is a listener that claims a non-loopback address; it is never
// accepted from.
type fakeListener struct {
	addr   net.Addr
	closed bool
}

func (l *fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (l *fakeListener) Close() error              { l.closed = true; return nil }
func (l *fakeListener) Addr() net.Addr            { return l.addr }

func TestServeRefusesPublicListenerWithoutToken(t *testing.T) {
	s := newServer(t, Config{}, newFakeExchange(), nil)
	lis := &fakeListener{addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7480}}
	err := s.Serve(t.Context(), lis)
	if !errors.Is(err, ErrInsecureListener) {
		t.Fatalf("Serve() = %v, want ErrInsecureListener", err)
	}
	if !lis.closed {
		t.Error("the refused listener was not closed")
	}
}

// TestServeShutsDownGracefully serves on a real loopback listener, starts a
// command that blocks, cancels Serve's context, and checks that the running
// request still completes and Serve returns nil.
func TestServeShutsDownGracefully(t *testing.T) {
	ex := newFakeExchange()
	s := newServer(t, Config{Addr: "127.0.0.1:0"}, ex, nil)
	lis, err := s.Listen()
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	base := "http://" + lis.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, lis) }()

	if resp, _ := doURL(t, base, "GET", "/healthz", "", nil); resp.StatusCode != 200 {
		t.Fatalf("GET /healthz = %d, want 200", resp.StatusCode)
	}

	type result struct {
		status int
		err    error
	}
	inflight := make(chan result, 1)
	go func() { // no t.Fatal off the test goroutine: report through the channel
		hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: defaultTestTimeout}
		resp, err := hc.Post(base+"/exchange/targets/t-block/commands", "application/json",
			strings.NewReader(`{"id":"cmd-1","type":"WAIT"}`))
		if err != nil {
			inflight <- result{err: err}
			return
		}
		resp.Body.Close()
		inflight <- result{status: resp.StatusCode}
	}()
	timer := time.NewTimer(defaultTestTimeout)
	defer timer.Stop()
	select {
	case <-ex.entered:
	case <-timer.C:
		t.Fatal("the blocking command never reached Send")
	}

	cancel() // start the shutdown while the command is in flight
	// Wait (bounded) until the shutdown has closed the listener, so the
	// command is released only once the shutdown is under way.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", lis.Addr().String(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		select {
		case <-tick.C:
		case <-timer.C:
			t.Fatal("the listener was not closed by the shutdown")
		}
	}
	select {
	case err := <-served:
		t.Fatalf("Serve() returned %v while a request was still running", err)
	default:
	}
	close(ex.release)

	select {
	case r := <-inflight:
		if r.err != nil || r.status != 200 {
			t.Errorf("in-flight command = %d, %v; want 200", r.status, r.err)
		}
	case <-timer.C:
		t.Fatal("the in-flight command did not complete")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve() = %v, want nil after shutdown", err)
		}
	case <-timer.C:
		t.Fatal("Serve did not return after its context was cancelled")
	}
}

func TestListenAndServeReportsListenErrors(t *testing.T) {
	s := newServer(t, Config{Addr: "127.0.0.1:not-a-port"}, newFakeExchange(), nil)
	if err := s.ListenAndServe(t.Context()); err == nil {
		t.Fatal("ListenAndServe() = nil, want a listen error")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ex   Exchange
	}{
		{"nil exchange", Config{}, nil},
		{"negative body limit", Config{BodyLimit: -1}, newFakeExchange()},
		{"empty token", Config{Tokens: []string{"a", ""}}, newFakeExchange()},
		{"command timeout over max", Config{CommandTimeout: 2 * time.Minute}, newFakeExchange()},
		{"write timeout under max command timeout", Config{WriteTimeout: 30 * time.Second}, newFakeExchange()},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg, tc.ex, nil, nil); err == nil {
			t.Errorf("%s: New() = nil error, want one", tc.name)
		}
	}
	if _, err := New(Config{}, newFakeExchange(), nil, nil); err != nil {
		t.Errorf("New(defaults) = %v", err)
	}
}

func TestHTTPErrorRetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{time.Millisecond, "1"}, {time.Second, "1"}, {1500 * time.Millisecond, "2"}, {10 * time.Second, "10"}} {
		if got := retryAfterSeconds(tc.d); got != tc.want {
			t.Errorf("retryAfterSeconds(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	// A cancelled request is not a server failure.
	if code, _, _ := httpError(fmt.Errorf("x: %w", context.Canceled)); code != http.StatusServiceUnavailable {
		t.Errorf("httpError(Canceled) = %d, want 503", code)
	}
}

// TestBodyLimitWithoutContentLength streams a body of unknown length over
// the limit: the server must cut it and answer 413.
func TestBodyLimitWithoutContentLength(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{BodyLimit: 64}, newFakeExchange(), nil))
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	body := io.MultiReader(strings.NewReader(`{"type":"ECHO","payload":"` + strings.Repeat("x", 500) + `"}`)) // hides the length
	req, err := http.NewRequestWithContext(ctx, "POST", ts.URL+"/exchange/targets/t1/commands", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("POST = %v", err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || req.ContentLength != 0 {
		t.Fatalf("status = %d (request length %d), want 413; body %s", resp.StatusCode, req.ContentLength, got)
	}
	checkGolden(t, "body_too_large", got)
}

// panickyExchange panics in Cluster.
type panickyExchange struct{ fakeExchange }

func (*panickyExchange) Cluster() controller.ClusterInfo { panic("cluster view broken") }

func TestHandlerPanicIs500(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, &panickyExchange{*newFakeExchange()}, nil))
	resp, body := do(t, ts, "GET", "/exchange/cluster", "", nil)
	if resp.StatusCode != 500 {
		t.Fatalf("status = %d, want 500; body %s", resp.StatusCode, body)
	}
	checkErrorBody(t, body, 500)
	if resp, _ := do(t, ts, "GET", "/healthz", "", nil); resp.StatusCode != 200 {
		t.Errorf("after a panic, GET /healthz = %d, want 200", resp.StatusCode)
	}
}

// TestHTTPErrorBatchRunner covers the batch runner's other errors.
func TestHTTPErrorBatchRunner(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int
	}{
		{&batchError{"b1", fmt.Errorf("execute: %w", batch.ErrInvalid)}, http.StatusBadRequest},
		{&batchError{"b1", fmt.Errorf("execute: %w", batch.ErrClosed)}, http.StatusServiceUnavailable},
		{&batchError{"b1", &batch.ValidationError{Field: "commands[3].command", Reason: "required"}}, http.StatusBadRequest},
		{fmt.Errorf("x: %w", controller.ErrClosed), http.StatusServiceUnavailable},
		// The store closed under a delete (the node is shutting down).
		{&batchError{"b1", fmt.Errorf("delete: %w", standalone.ErrClosed)}, http.StatusServiceUnavailable},
		// In a cluster: the node holding the channel is unreachable.
		{fmt.Errorf("x: %w", controller.ErrForwardingUnavailable), http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		if code, msg, _ := httpError(tc.err); code != tc.want || msg == "" {
			t.Errorf("httpError(%v) = %d %q, want %d", tc.err, code, msg, tc.want)
		}
	}
	if _, msg, _ := httpError(&batchError{"b1", &batch.ValidationError{Field: "commands[3].command", Reason: "required"}}); msg != "invalid field commands[3]: required" {
		t.Errorf("message = %q, want the request's field path", msg)
	}
}
