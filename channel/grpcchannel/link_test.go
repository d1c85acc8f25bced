package grpcchannel_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/test/bufconn"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
)

// Node-to-node links (exchange.v1.Cluster/Link) are carried by the same Conn
// as connector channels: the same conformance suite runs over them.

func TestLinkConformanceBufconn(t *testing.T) {
	channeltest.TestConn(t, bufconnLinkPipe)
	channeltest.TestChannel(t, bufconnLinkPipe)
}

func TestLinkConformanceTCP(t *testing.T) {
	channeltest.TestConn(t, tcpLinkPipe)
	channeltest.TestChannel(t, tcpLinkPipe)
}

func BenchmarkGRPCLink(b *testing.B) {
	b.Run("tcp", func(b *testing.B) { channeltest.RunBenchmarks(b, tcpLinkPipe) })
}

// bufconnLinkPipe is a channeltest.MakePipe over a Link stream in memory.
func bufconnLinkPipe(t testing.TB) (a, b channel.Conn) {
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis)
	d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis), grpcchannel.WithLinkService())
	return connectOn(t, srv.Links(), d)
}

// tcpLinkPipe is a channeltest.MakePipe over a Link stream on loopback TCP.
func tcpLinkPipe(t testing.TB) (a, b channel.Conn) {
	lis := listenTCP(t)
	srv := startServer(t, lis)
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure(), grpcchannel.WithLinkService())
	return connectOn(t, srv.Links(), d)
}

// connectOn is connect for any listener: it dials d and accepts on l.
func connectOn(t testing.TB, l channel.Listener, d channel.Dialer) (a, b channel.Conn) {
	t.Helper()
	ctx := testContext(t)
	a, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	b, err = l.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return a, b
}

// linkServer serves a Server on a bufconn and returns it with a dialer of
// Connect streams and one of Link streams.
func linkServer(t *testing.T) (srv *grpcchannel.Server, connects, links *grpcchannel.Dialer) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv = startServer(t, lis)
	connects = newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis))
	links = newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis), grpcchannel.WithLinkService())
	return srv, connects, links
}

// expectNoAccept checks that l has nothing to accept for a short while.
func expectNoAccept(t *testing.T, name string, l channel.Listener) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestShortTimeout)
	defer cancel()
	if c, err := l.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		if c != nil {
			_ = c.Close()
		}
		t.Errorf("%s Accept() = %v, want nothing to accept (DeadlineExceeded)", name, err)
	}
}

// Connect and Link streams on one server at once: each listener gets only its
// own kind.
func TestLinkAndConnectOnOneServer(t *testing.T) {
	ctx := testContext(t)
	srv, connects, linkDialer := linkServer(t)
	links := srv.Links()

	// Each client announces its kind in its first frame.
	const n = 4
	var clients []channel.Conn
	for i := range n {
		for _, k := range []struct {
			kind string
			d    *grpcchannel.Dialer
		}{{"connect", connects}, {"link", linkDialer}} {
			c, err := k.d.Dial(ctx)
			if err != nil {
				t.Fatalf("%s Dial() #%d = %v", k.kind, i, err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if err := c.Send(cmdFrame(fmt.Sprintf("%s-%d", k.kind, i), nil)); err != nil {
				t.Fatalf("%s Send() #%d = %v", k.kind, i, err)
			}
			clients = append(clients, c)
		}
	}
	for _, k := range []struct {
		kind string
		l    channel.Listener
	}{{"connect", srv}, {"link", links}} {
		for i := range n {
			c, err := k.l.Accept(ctx)
			if err != nil {
				t.Fatalf("%s Accept() #%d = %v", k.kind, i, err)
			}
			t.Cleanup(func() { _ = c.Close() })
			f := mustRecv(t, ctx, c)
			if f.Command == nil || !strings.HasPrefix(f.Command.ID, k.kind+"-") {
				t.Errorf("%s listener accepted a stream whose first frame is %+v, want a command from a %s client", k.kind, f, k.kind)
			}
			// Answer, so the client end can be checked too.
			if err := c.Send(&channel.Frame{Reply: &command.Reply{CommandID: f.Command.ID, Type: "ECHO", Status: command.StatusSucceeded}}); err != nil {
				t.Fatalf("%s Send() = %v", k.kind, err)
			}
		}
		expectNoAccept(t, k.kind, k.l)
	}
	for _, c := range clients {
		if f := mustRecv(t, ctx, c); f.Reply == nil {
			t.Errorf("client Recv() = %+v, want a reply", f)
		}
	}
}

// A node that is not clustered (Links never called) refuses node links, and
// still serves connectors.
func TestLinkRefusedWhenNotEnabled(t *testing.T) {
	ctx := testContext(t)
	srv, connects, linkDialer := linkServer(t)

	c, err := linkDialer.Dial(ctx)
	if err == nil {
		_ = c.Close()
		t.Fatal("link Dial() to a server that does not accept links succeeded")
	}
	if !errors.Is(err, channel.ErrClosed) || !strings.Contains(err.Error(), "Unimplemented") {
		t.Errorf("link Dial() = %v, want ErrClosed saying Unimplemented", err)
	}
	a, b := connectOn(t, srv, connects)
	roundTrip(t, ctx, a, b)

	// Enabling links later takes effect at once.
	a, b = connectOn(t, srv.Links(), linkDialer)
	roundTrip(t, ctx, a, b)
}

func TestLinksSameListener(t *testing.T) {
	srv := grpcchannel.NewServer()
	defer srv.Stop()
	if l1, l2 := srv.Links(), srv.Links(); l1 != l2 {
		t.Errorf("Links() = %p then %p, want the same listener", l1, l2)
	}
}

// Closing the links listener refuses links but not connector channels.
func TestLinksClose(t *testing.T) {
	ctx := testContext(t)
	srv, connects, linkDialer := linkServer(t)
	links := srv.Links()
	la, lb := connectOn(t, links, linkDialer)

	if err := links.Close(); err != nil {
		t.Fatalf("links Close() = %v", err)
	}
	if err := links.Close(); err != nil {
		t.Fatalf("second links Close() = %v", err)
	}
	if _, err := links.Accept(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("links Accept() after Close = %v, want ErrClosed", err)
	}
	if c, err := linkDialer.Dial(ctx); err == nil {
		_ = c.Close()
		t.Error("link Dial() after links Close succeeded, want a refusal")
	} else if !errors.Is(err, grpcchannel.ErrUnavailable) {
		t.Errorf("link Dial() after links Close = %v, want ErrUnavailable", err)
	}
	if srv.Links() != links {
		t.Error("Links() after Close returned another listener")
	}
	// The link accepted before Close lives on, and connectors are unaffected.
	roundTrip(t, ctx, la, lb)
	a, b := connectOn(t, srv, connects)
	roundTrip(t, ctx, a, b)
}

// Closing the Server (the connector listener) does not close the links.
func TestServerCloseKeepsLinks(t *testing.T) {
	ctx := testContext(t)
	srv, connects, linkDialer := linkServer(t)
	links := srv.Links()
	la, lb := connectOn(t, links, linkDialer)

	if err := srv.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if c, err := connects.Dial(ctx); err == nil {
		_ = c.Close()
		t.Error("Dial() after server Close succeeded, want a refusal")
	} else if !errors.Is(err, grpcchannel.ErrUnavailable) {
		t.Errorf("Dial() after server Close = %v, want ErrUnavailable", err)
	}
	roundTrip(t, ctx, la, lb)
	a, b := connectOn(t, links, linkDialer)
	roundTrip(t, ctx, a, b)
}

// Stop closes the links listener and cuts the links.
func TestStopClosesLinks(t *testing.T) {
	ctx := testContext(t)
	srv, _, linkDialer := linkServer(t)
	links := srv.Links()
	a, b := connectOn(t, links, linkDialer)

	srv.Stop()
	if _, err := links.Accept(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("links Accept() after Stop = %v, want ErrClosed", err)
	}
	if _, err := recvWithin(t, ctx, a); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("client Recv() after Stop = %v, want ErrClosed", err)
	}
	if _, err := recvWithin(t, ctx, b); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("server Recv() after Stop = %v, want ErrClosed", err)
	}
}

// GracefulStop refuses a Link stream nobody accepted (it would otherwise
// wait for it forever) and waits for the accepted ones.
func TestGracefulStopWithLinks(t *testing.T) {
	ctx := testContext(t)
	srv, _, linkDialer := linkServer(t)
	links := srv.Links()
	a, b := connectOn(t, links, linkDialer)
	pending, err := linkDialer.Dial(ctx) // never accepted
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { _ = pending.Close() })

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		srv.GracefulStop()
	}()
	t.Cleanup(func() {
		srv.Stop() // so a failing test does not wait for GracefulStop forever
		<-stopped
	})
	if _, err := recvWithin(t, ctx, pending); !errors.Is(err, channel.ErrClosed) || !strings.Contains(err.Error(), "Unavailable") {
		t.Errorf("Recv() on a link not accepted before GracefulStop = %v, want ErrClosed saying Unavailable", err)
	}
	roundTrip(t, ctx, a, b) // the accepted link still works

	if err := b.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("GracefulStop() did not return after the last link closed")
	}
	if _, err := recvWithin(t, ctx, a); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("client Recv() = %v, want ErrClosed", err)
	}
}
