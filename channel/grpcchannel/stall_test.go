package grpcchannel_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// freezeProxy forwards TCP connections to a target until Freeze, after which
// it stops moving bytes in both directions without closing anything: to both
// ends the connection looks alive but silent (a half-open connection, a dead
// NAT entry, a peer that lost power).
type freezeProxy struct {
	lis    net.Listener
	target string

	frozen     chan struct{} // closed by Freeze
	freezeOnce sync.Once
	done       chan struct{} // closed by Close
	closeOnce  sync.Once

	mu    sync.Mutex // protects conns
	conns []net.Conn
	wg    sync.WaitGroup // accept loop and pumps
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	p := &freezeProxy{
		lis:    listenTCP(t),
		target: target,
		frozen: make(chan struct{}),
		done:   make(chan struct{}),
	}
	p.wg.Go(p.acceptLoop)
	t.Cleanup(p.Close)
	return p
}

func (p *freezeProxy) Addr() string { return p.lis.Addr().String() }

// Freeze stops all forwarding for good.
func (p *freezeProxy) Freeze() { p.freezeOnce.Do(func() { close(p.frozen) }) }

// Close closes the listener and every connection, and waits for the
// proxy's goroutines.
func (p *freezeProxy) Close() {
	p.closeOnce.Do(func() {
		close(p.done)
		_ = p.lis.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

// track registers c to be closed by Close; it reports false (and closes c)
// when the proxy is already closed.
func (p *freezeProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		_ = c.Close()
		return false
	default:
		p.conns = append(p.conns, c)
		return true
	}
}

func (p *freezeProxy) acceptLoop() {
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(in) {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(out) {
			return
		}
		p.wg.Go(func() { p.pump(out, in) })
		p.wg.Go(func() { p.pump(in, out) })
	}
}

// pump copies src to dst until an error, or until the proxy is frozen: then
// it holds what it read, stops reading, and waits for Close.
func (p *freezeProxy) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			<-p.done
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

// TestStalledConnection freezes the network path of an open channel and
// checks that both ends notice through keepalive and fail Recv with
// ErrClosed: the server (keepalive 1 s + 1 s, gRPC's minimum ping interval)
// within a few seconds, the client on the defaults (ping after 15 s of silence
// + 5 s; gRPC does not let a client ping more often than every 10 s) within
// 20 s. This is the
// suite's one slow test.
func TestStalledConnection(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithKeepalive(grpcchannel.ServerKeepalive{Time: time.Second, Timeout: time.Second}))
	proxy := newFreezeProxy(t, lis.Addr().String())
	d := newDialer(t, proxy.Addr(), grpcchannel.WithInsecure())
	a, b := connect(t, srv, d)
	roundTrip(t, ctx, a, b)

	serverBound := 8 * time.Second
	clientBound := grpcchannel.DefaultClientKeepaliveTime + grpcchannel.DefaultClientKeepaliveTimeout + 5*time.Second
	if dl, ok := t.Deadline(); ok && time.Until(dl) < clientBound+time.Second {
		t.Fatalf("test deadline in %v, need %v: run with a longer -timeout", time.Until(dl), clientBound)
	}

	start := time.Now()
	clientRecv := goRecv(t, a)
	serverRecv := goRecv(t, b)
	proxy.Freeze()

	serverTimer := time.NewTimer(serverBound)
	defer serverTimer.Stop()
	select {
	case r := <-serverRecv:
		if !errors.Is(r.err, channel.ErrClosed) {
			t.Errorf("server Recv() = %+v, %v; want ErrClosed", r.f, r.err)
		}
		t.Logf("server noticed the stall after %v: %v", time.Since(start).Round(time.Millisecond), r.err)
	case <-serverTimer.C:
		t.Fatalf("server Recv() still blocked %v after the stall", serverBound)
	}

	clientTimer := time.NewTimer(clientBound - time.Since(start))
	defer clientTimer.Stop()
	select {
	case r := <-clientRecv:
		if !errors.Is(r.err, channel.ErrClosed) {
			t.Errorf("client Recv() = %+v, %v; want ErrClosed", r.f, r.err)
		}
		t.Logf("client noticed the stall after %v: %v", time.Since(start).Round(time.Millisecond), r.err)
	case <-clientTimer.C:
		t.Fatalf("client Recv() still blocked %v after the stall", clientBound)
	}
}
