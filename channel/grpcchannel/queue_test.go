package grpcchannel_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// The handshake queue (ServerLimits.HandshakeQueueWait; decision 0044): a
// Connect stream over MaxHandshakes waits in line for a place instead of
// being refused. Every path out of the line is tested here: served in
// arrival order, cancelled by its client, timed out, refused for a full
// line, server closing, per-source limits, a stream whose handler never
// runs; after each the counts are exact.

type dialResult struct {
	c   channel.Conn
	err error
}

// dialAsync dials d in a goroutine (bounded by ctx) and delivers the result;
// a Conn delivered is closed when the test ends.
func dialAsync(t testing.TB, ctx context.Context, d *grpcchannel.Dialer) <-chan dialResult {
	t.Helper()
	out := make(chan dialResult, 1)
	go func() {
		c, err := d.Dial(ctx)
		out <- dialResult{c, err}
	}()
	t.Cleanup(func() {
		// The result has been taken (it was put back by took), or the Dial
		// ends by ctx at the latest.
		select {
		case r := <-out:
			if r.c != nil {
				_ = r.c.Close()
			}
		default:
		}
	})
	return out
}

// took receives a Dial's result, failing the test when ctx ends first. The
// Conn is closed when the test ends.
func took(t testing.TB, ctx context.Context, ch <-chan dialResult) dialResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.c != nil {
			t.Cleanup(func() { _ = r.c.Close() })
		}
		return r
	case <-ctx.Done():
		t.Fatal("timed out waiting for a Dial")
		return dialResult{}
	}
}

// served fails the test unless the Dial of ch was served, and returns the
// server's end of its stream (Accept), closed when the test ends.
func served(t testing.TB, ctx context.Context, srv *grpcchannel.Server, ch <-chan dialResult, what string) channel.Conn {
	t.Helper()
	if r := took(t, ctx, ch); r.err != nil {
		t.Fatalf("%s = %v, want it served", what, r.err)
	}
	b, err := srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() of the stream of %s = %v", what, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// stillWaiting fails the test if ch has a result.
func stillWaiting(t testing.TB, ch <-chan dialResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned (%v, %v), want it still queued", what, r.c, r.err)
	default:
	}
}

func queueLimits(max int, wait time.Duration) grpcchannel.ServerLimits {
	return grpcchannel.ServerLimits{MaxHandshakes: max, MaxHandshakesPerSource: -1, HandshakeQueueWait: wait}
}

// Streams over the limit wait and are served in arrival order as places
// free up; the place of a stream that completes its HELLO or ends goes to
// the head of the line.
func TestHandshakeQueueServesInOrder(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(queueLimits(3, 10*time.Second)))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())

	// Three places, held by accepted silent streams.
	held := holdPlaces(t, ctx, srv, d, 3)
	// Three more, queued one after the other (before any place has freed
	// up the line admits MaxHandshakes per budget).
	var waiting []<-chan dialResult
	for i := range 3 {
		waiting = append(waiting, dialAsync(t, ctx, d))
		waitUntil(t, ctx, fmt.Sprintf("%d queued", i+1), func() bool { return srv.Stats().Queued == i+1 })
	}
	if st := srv.Stats(); st.Handshakes != 3 || st.RefusedHandshakes != 0 {
		t.Fatalf("Stats() = %+v, want 3 handshakes, 3 queued, no refusal", st)
	}
	for i := range waiting {
		stillWaiting(t, waiting[i], fmt.Sprintf("queued Dial %d", i))
	}

	// The first place freed by a completed HELLO, the second by a stream
	// that ends, the third by the server's close of a stream.
	free := []func(){
		func() {
			held[0].(channel.HandshakeCompleter).HandshakeComplete()
		},
		func() { _ = held[1].Close() },
		func() { _ = held[2].(channel.CloseWithErrorer).CloseWithError(errors.New("go away")) },
	}
	for i := range waiting {
		free[i]()
		b := served(t, ctx, srv, waiting[i], fmt.Sprintf("queued Dial %d", i))
		for j := i + 1; j < len(waiting); j++ {
			stillWaiting(t, waiting[j], fmt.Sprintf("queued Dial %d after %d places freed", j, i+1))
		}
		held = append(held, b)
	}
	st := srv.Stats()
	if st.Queued != 0 || st.Handshakes != 3 || st.QueueServed != 3 || st.QueueWait <= 0 || st.RefusedHandshakes != 0 {
		t.Fatalf("Stats() = %+v, want none queued, 3 handshakes, 3 served, a wait, no refusal", st)
	}
	// The served streams are ordinary handshakes: completing one frees a
	// place that a new stream takes at once.
	handshakeCompleteAll(held[3:])
	waitUntil(t, ctx, "the served handshakes done", func() bool { return srv.Stats().Handshakes == 0 })
	handshake(t, ctx, srv, d)
}

func handshakeCompleteAll(cs []channel.Conn) {
	for _, c := range cs {
		c.(channel.HandshakeCompleter).HandshakeComplete()
	}
}

// holdPlaces takes n places with silent accepted streams, closed when the
// test ends; it returns their server ends.
func holdPlaces(t *testing.T, ctx context.Context, srv *grpcchannel.Server, d *grpcchannel.Dialer, n int) []channel.Conn {
	t.Helper()
	var bs []channel.Conn
	for range n {
		c, err := d.Dial(ctx)
		if err != nil {
			t.Fatalf("Dial() within the limit = %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		b, err := srv.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept() = %v", err)
		}
		t.Cleanup(func() { _ = b.Close() })
		bs = append(bs, b)
	}
	return bs
}

// A client that gives up while queued leaves the line at once, and the
// place freed next goes to the one behind it.
func TestHandshakeQueueCancelled(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(queueLimits(2, 10*time.Second)))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	held := holdPlaces(t, ctx, srv, d, 2)

	gone, cancel := context.WithCancel(ctx)
	first := dialAsync(t, gone, d)
	waitUntil(t, ctx, "the first queued", func() bool { return srv.Stats().Queued == 1 })
	second := dialAsync(t, ctx, d)
	waitUntil(t, ctx, "the second queued", func() bool { return srv.Stats().Queued == 2 })
	cancel()
	if r := took(t, ctx, first); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Dial = %v, want context.Canceled", r.err)
	}
	waitUntil(t, ctx, "the cancelled stream out of the line", func() bool { return srv.Stats().Queued == 1 })

	_ = held[0].Close()
	b := served(t, ctx, srv, second, "second queued Dial")
	st := srv.Stats()
	if st.Queued != 0 || st.Handshakes != 2 || st.QueueServed != 1 || st.RefusedHandshakes != 0 {
		t.Fatalf("Stats() = %+v, want none queued, 2 handshakes, 1 served, no refusal", st)
	}
	_ = b.Close()
	_ = held[1].Close()
	waitUntil(t, ctx, "every place free", func() bool { return srv.Stats().Handshakes == 0 })
}

// A stream still queued when its budget has passed is refused then, as at
// the limit; one that would wait longer than the line's cap allows is
// refused at once.
func TestHandshakeQueueRefusals(t *testing.T) {
	t.Run("Timeout", func(t *testing.T) {
		ctx := testContext(t)
		lis := listenTCP(t)
		srv := startServer(t, lis, grpcchannel.WithLimits(queueLimits(1, 150*time.Millisecond)))
		d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
		holdPlaces(t, ctx, srv, d, 1)
		_, err := d.Dial(ctx)
		if !errors.Is(err, channel.ErrLimitExceeded) || !errors.Is(err, grpcchannel.ErrUnavailable) {
			t.Fatalf("Dial() that waits out its budget = %v, want ErrLimitExceeded and ErrUnavailable", err)
		}
		st := srv.Stats()
		if st.Queued != 0 || st.QueueTimeouts != 1 || st.RefusedHandshakes != 1 || st.QueueFull != 0 || st.QueueServed != 0 || st.Handshakes != 1 {
			t.Fatalf("Stats() = %+v, want 1 timeout (1 refusal), none queued, 1 handshake", st)
		}
	})
	t.Run("Full", func(t *testing.T) {
		ctx := testContext(t)
		lis := listenTCP(t)
		l := queueLimits(2, 10*time.Second)
		l.MaxQueuedHandshakes = 1
		srv := startServer(t, lis, grpcchannel.WithLimits(l))
		d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
		held := holdPlaces(t, ctx, srv, d, 2)
		queued := dialAsync(t, ctx, d)
		waitUntil(t, ctx, "one queued", func() bool { return srv.Stats().Queued == 1 })
		_, err := d.Dial(ctx)
		if !errors.Is(err, channel.ErrLimitExceeded) {
			t.Fatalf("Dial() beyond the line's cap = %v, want ErrLimitExceeded", err)
		}
		st := srv.Stats()
		if st.QueueFull != 1 || st.RefusedHandshakes != 1 || st.Queued != 1 {
			t.Fatalf("Stats() = %+v, want 1 refused for a full line, 1 still queued", st)
		}
		_ = held[0].Close()
		_ = served(t, ctx, srv, queued, "queued Dial").Close()
	})
	t.Run("Budget", func(t *testing.T) {
		// No cap: before any place has freed up the line takes MaxHandshakes
		// per budget (here 2), and refuses the next at once.
		ctx := testContext(t)
		lis := listenTCP(t)
		l := queueLimits(2, 10*time.Second)
		l.MaxQueuedHandshakes = -1
		srv := startServer(t, lis, grpcchannel.WithLimits(l))
		d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
		holdPlaces(t, ctx, srv, d, 2)
		for i := range 2 {
			dialAsync(t, ctx, d)
			waitUntil(t, ctx, fmt.Sprintf("%d queued", i+1), func() bool { return srv.Stats().Queued == i+1 })
		}
		if _, err := d.Dial(ctx); !errors.Is(err, channel.ErrLimitExceeded) {
			t.Fatalf("Dial() beyond the budget = %v, want ErrLimitExceeded", err)
		}
		if st := srv.Stats(); st.QueueFull != 1 || st.Queued != 2 {
			t.Fatalf("Stats() = %+v, want 1 refused for the budget, 2 queued", st)
		}
	})
}

// Closing the server with streams in line refuses them with UNAVAILABLE
// (as for streams not yet accepted) and empties the line; stopping it ends
// them too.
func TestHandshakeQueueServerCloses(t *testing.T) {
	for _, stop := range []bool{false, true} {
		t.Run(fmt.Sprintf("Stop=%v", stop), func(t *testing.T) {
			ctx := testContext(t)
			lis := listenTCP(t)
			srv := startServer(t, lis, grpcchannel.WithLimits(queueLimits(2, 10*time.Second)))
			d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
			holdPlaces(t, ctx, srv, d, 2)
			var waiting []<-chan dialResult
			for i := range 2 {
				waiting = append(waiting, dialAsync(t, ctx, d))
				waitUntil(t, ctx, fmt.Sprintf("%d queued", i+1), func() bool { return srv.Stats().Queued == i+1 })
			}
			if stop {
				srv.Stop()
			} else {
				_ = srv.Close()
			}
			for i, w := range waiting {
				if r := took(t, ctx, w); !errors.Is(r.err, grpcchannel.ErrUnavailable) || errors.Is(r.err, channel.ErrLimitExceeded) {
					t.Fatalf("queued Dial %d after the server closed = %v, want ErrUnavailable, not a limit", i, r.err)
				}
			}
			waitUntil(t, ctx, "the line empty", func() bool { return srv.Stats().Queued == 0 })
			if st := srv.Stats(); st.RefusedHandshakes != 0 || st.QueueServed != 0 {
				t.Fatalf("Stats() = %+v, want no refusal and none served", st)
			}
		})
	}
}

// A queued stream counts against its source's limit: one source holds at
// most MaxHandshakesPerSource placed and queued, and another source still
// gets in line.
func TestHandshakeQueuePerSource(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{
		MaxHandshakes: 2, MaxHandshakesPerSource: 3, HandshakeQueueWait: 10 * time.Second}))
	a := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure(), fromSource("127.0.0.1"))
	b := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure(), fromSource("127.0.0.2"))
	refusedAtSource := func(what string) {
		t.Helper()
		_, err := a.Dial(ctx)
		if err == nil || !errors.Is(err, channel.ErrLimitExceeded) || !strings.Contains(err.Error(), "from 127.0.0.1") {
			t.Fatalf("%s = %v, want refused at its source's limit", what, err)
		}
	}
	held := holdPlaces(t, ctx, srv, a, 2)
	fromA := dialAsync(t, ctx, a)
	waitUntil(t, ctx, "a's third queued", func() bool { return srv.Stats().Queued == 1 })
	refusedAtSource("a's fourth Dial()")
	if st := srv.Stats(); st.QueueFull != 0 || st.RefusedHandshakes != 1 {
		t.Fatalf("Stats() = %+v, want 1 refusal at the source's limit, not for the line", st)
	}
	fromB := dialAsync(t, ctx, b)
	waitUntil(t, ctx, "b's queued", func() bool { return srv.Stats().Queued == 2 })

	_ = held[0].Close() // a's place goes to a's queued stream, first in line
	sa := served(t, ctx, srv, fromA, "a's queued Dial")
	stillWaiting(t, fromB, "b's queued Dial")
	_ = sa.Close()
	_ = served(t, ctx, srv, fromB, "b's queued Dial").Close()
	waitUntil(t, ctx, "one place taken (a's)", func() bool { return srv.Stats().Handshakes == 1 })
	// a's count is exact again: it holds one place, so one more place and
	// one in line, and no more.
	holdPlaces(t, ctx, srv, a, 1)
	dialAsync(t, ctx, a)
	waitUntil(t, ctx, "a queued again", func() bool { return srv.Stats().Queued == 1 })
	refusedAtSource("a's Dial() over its limit again")
}

// A queued stream whose handler never runs (here an interceptor of the
// caller's refuses every stream, and gRPC ends it) leaves no trace: when a
// place frees up it is passed over, its context having ended, or its budget
// takes it out of the line first. (A place given to a stream whose handler
// never runs is given back at the HandshakeTimeout, as for any place:
// TestHandshakePlaceOfAStreamNeverHandled.)
func TestHandshakeQueueStreamNeverHandled(t *testing.T) {
	for _, tc := range []struct {
		name            string
		timeout, budget time.Duration
		expired         uint64
	}{
		{"PassedOver", 200 * time.Millisecond, 5 * time.Second, 0},
		{"Expired", 1 * time.Second, 100 * time.Millisecond, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			lis := listenTCP(t)
			refuse, deny := refusingInterceptor()
			srv := startServer(t, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{
				MaxHandshakes: 1, MaxHandshakesPerSource: -1, HandshakeTimeout: tc.timeout,
				HandshakeQueueWait: tc.budget}), grpcchannel.WithServerOptions(deny))
			d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
			// The first takes the place, the second gets in line.
			for i := range 2 {
				if c, err := d.Dial(ctx); err == nil {
					_ = c.Close()
					t.Fatalf("Dial() %d through the refusing interceptor succeeded", i)
				}
			}
			if st := srv.Stats(); st.Handshakes != 1 || st.Queued+int(st.QueueTimeouts) != 1 {
				t.Fatalf("Stats() = %+v, want 1 handshake and 1 stream in line (or timed out)", st)
			}
			waitUntil(t, ctx, "the line empty and the places free", func() bool {
				st := srv.Stats()
				return st.Queued == 0 && st.Handshakes == 0 && st.QueueTimeouts == tc.expired
			})
			if st := srv.Stats(); st.QueueServed != 0 || st.QueueTimeouts != tc.expired || st.SilentStreams != 0 {
				t.Fatalf("Stats() = %+v, want none served, %d timed out, no silent stream", st, tc.expired)
			}
			refuse.Store(false)
			handshake(t, ctx, srv, d)
		})
	}
}

// Off (a negative wait), the queue changes nothing: the stream over the
// limit is refused at once.
func TestHandshakeQueueOff(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(queueLimits(1, -1)))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	holdPlaces(t, ctx, srv, d, 1)
	if _, err := d.Dial(ctx); !errors.Is(err, channel.ErrLimitExceeded) {
		t.Fatalf("Dial() over the limit without a queue = %v, want ErrLimitExceeded", err)
	}
	if st := srv.Stats(); st.Queued != 0 || st.RefusedHandshakes != 1 || st.QueueFull != 0 || st.QueueTimeouts != 0 {
		t.Fatalf("Stats() = %+v, want 1 refusal, no queue", st)
	}
}

// On by default (decision 0054): with the limits' zero value for the wait,
// a stream over the limit waits in line and takes the first place freed.
func TestHandshakeQueueOnByDefault(t *testing.T) {
	if w := grpcchannel.DefaultServerLimits().HandshakeQueueWait; w <= 0 {
		t.Fatalf("DefaultServerLimits().HandshakeQueueWait = %v, want the queue on", w)
	}
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(queueLimits(1, 0)))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	held := holdPlaces(t, ctx, srv, d, 1)
	waiting := dialAsync(t, ctx, d)
	waitUntil(t, ctx, "the stream over the limit queued", func() bool { return srv.Stats().Queued == 1 })
	stillWaiting(t, waiting, "the queued Dial")
	_ = held[0].Close()
	_ = served(t, ctx, srv, waiting, "queued Dial, once the place is freed").Close()
	if st := srv.Stats(); st.QueueServed != 1 || st.RefusedHandshakes != 0 {
		t.Fatalf("Stats() = %+v, want 1 served from the line, no refusal", st)
	}
}
