package controller_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// grpcLoopback serves a grpcchannel.Server on a loopback TCP port until the
// test ends (it is stopped after the controller, which owns it as its
// listener, is closed).
func grpcLoopback(t *testing.T, limits grpcchannel.ServerLimits) (*grpcchannel.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcchannel.NewServer(grpcchannel.WithLimits(limits))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})
	return srv, lis.Addr().String()
}

// grpcDialer dials addr from the loopback address local (all of 127/8 is
// loopback on Linux), so that tests can play several sources.
func grpcDialer(t *testing.T, addr, local string) *grpcchannel.Dialer {
	t.Helper()
	d, err := grpcchannel.NewDialer(addr, grpcchannel.WithInsecure(),
		grpcchannel.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			return nd.DialContext(ctx, "tcp", a)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// checkWorks connects a well-behaved connector for target through d, waits
// for its registration and sends it an ECHO.
func checkWorks(t *testing.T, h *harness, d channel.Dialer, target string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	conn, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("well-behaved connector: Dial() = %v", err)
	}
	c, err := h.attach(ctx, conn, connOpts{target: target, token: "good",
		handlers: map[command.Type]command.Handler{"ECHO": echo}})
	if err != nil {
		t.Fatalf("well-behaved connector: HELLO = %v", err)
	}
	t.Cleanup(c.close)
	h.waitRegistered(c.id(), true)
	r, err := h.ctrl.Send(ctx, target, command.MustCommand("ECHO", map[string]int{"x": 1}))
	if err != nil || r.Status != command.StatusSucceeded {
		t.Fatalf("Send(ECHO) = %+v, %v; want SUCCEEDED", r, err)
	}
}

// Over real gRPC: handshakes beyond the limit are refused at once while the
// others are pending; silent streams and silent connections are closed; then
// a well-behaved connector registers and works.
func TestPreHelloLimitsOverGRPC(t *testing.T) {
	srv, addr := grpcLoopback(t, grpcchannel.ServerLimits{
		MaxHandshakes:          2,
		MaxHandshakesPerSource: -1,
		HandshakeQueueWait:     -1, // refused at once, not queued
		HandshakeTimeout:       300 * time.Millisecond,
		ConnectionTimeout:      200 * time.Millisecond,
		MaxConnectionIdle:      200 * time.Millisecond,
	})
	d := grpcDialer(t, addr, "127.0.0.1")
	h := newHarness(t, fastConfig(), harnessOpts{lis: srv, dial: d})
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	// Two streams that never say HELLO hold both places.
	for range 2 {
		conn, err := d.Dial(ctx)
		if err != nil {
			t.Fatalf("Dial() = %v", err)
		}
		defer conn.Close()
	}
	_, err := h.dial(ctx, connOpts{target: "t1"})
	if !errors.Is(err, channel.ErrLimitExceeded) {
		t.Fatalf("3rd handshake = %v, want ErrLimitExceeded", err)
	}
	t.Logf("3rd handshake: %v", err)

	// They are closed after the pre-HELLO limit.
	h.waitFor("silent streams closed", func() bool {
		s := srv.Stats()
		return s.SilentStreams == 2 && s.Handshakes == 0
	})
	checkWorks(t, h, d, "t1")

	// A connection that never speaks is closed too.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, raw); err != nil {
		t.Fatalf("read from a silent connection = %v, want EOF", err)
	}
	checkWorks(t, h, grpcDialer(t, addr, "127.0.0.1"), "t2")
}

// countingAuth counts its calls and accepts the token "good".
type countingAuth struct{ calls atomic.Int64 }

func (a *countingAuth) Authenticate(ctx context.Context, req controller.HelloRequest) (string, error) {
	a.calls.Add(1)
	return controller.StaticTokens("good").Authenticate(ctx, req)
}

// Over real gRPC: once a source has used up its failed HELLOs, its next
// connections are refused before the HELLO is read (the authenticator does
// not run), with a retryable error; other sources are unaffected.
func TestFailedHelloRateLimitOverGRPC(t *testing.T) {
	srv, addr := grpcLoopback(t, grpcchannel.ServerLimits{})
	attacker := grpcDialer(t, addr, "127.0.0.1")
	auth := &countingAuth{}
	cfg := fastConfig()
	cfg.Authenticator = auth
	cfg.FailedHelloRate = 0.001 // no refill within the test
	cfg.FailedHelloBurst = 3
	h := newHarness(t, cfg, harnessOpts{lis: srv, dial: attacker})
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	for i := range 3 {
		_, err := h.dial(ctx, connOpts{target: "t1", token: "guess"})
		var rej *channel.HelloRejectedError
		if !errors.As(err, &rej) {
			t.Fatalf("bad HELLO #%d = %v, want a HelloRejectedError", i+1, err)
		}
	}
	h.waitFor("3 failures recorded", func() bool { return h.metrics.count("hello:unauthenticated") == 3 })

	for i := range 2 { // even with the right token: the source is refused
		_, err := h.dial(ctx, connOpts{target: "t1", token: "good"})
		if !errors.Is(err, channel.ErrLimitExceeded) || errors.Is(err, channel.ErrHelloRejected) {
			t.Fatalf("HELLO #%d over the rate = %v, want ErrLimitExceeded (retryable), not a rejection", i+4, err)
		}
		t.Logf("HELLO #%d over the rate: %v", i+4, err)
	}
	if got := auth.calls.Load(); got != 3 {
		t.Errorf("authenticator called %d times, want 3 (not for refusals over the rate)", got)
	}
	h.waitFor("rate-limited refusals counted", func() bool { return h.metrics.count("hello:rate_limited") == 2 })

	checkWorks(t, h, grpcDialer(t, addr, "127.0.0.2"), "t1")
	if got := auth.calls.Load(); got != 4 {
		t.Errorf("authenticator called %d times, want 4", got)
	}
}
