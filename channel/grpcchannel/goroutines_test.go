package grpcchannel_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
)

// goroutineStacks returns the stack of every goroutine.
func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(bytes.TrimSpace(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// countStacks counts the stacks that contain every one of frames.
func countStacks(stacks []string, frames ...string) int {
	n := 0
next:
	for _, s := range stacks {
		for _, f := range frames {
			if !strings.Contains(s, f) {
				continue next
			}
		}
		n++
	}
	return n
}

// An idle channel costs its server no goroutine beyond gRPC's own: the read
// loop runs on the Connect handler's goroutine (channel.ReaderHost), there
// is no writer while nothing is queued, and no handler while nothing is
// handled. The client side keeps one goroutine of the channel's: its reader.
// This is the structure the memory figures of BenchmarkIdleChannels rest on.
func TestIdleChannelGoroutines(t *testing.T) {
	const n = 8
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis)
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Payload: c.Payload}, nil
	})
	for range n {
		a, b := connect(t, srv, d)
		ca := channel.New(a, mux, channel.Config{})
		t.Cleanup(func() { _ = ca.Close() })
		cb := channel.New(b, mux, channel.Config{})
		t.Cleanup(func() { _ = cb.Close() })
		// Traffic both ways first: writers and handlers come and go.
		for _, ch := range []*channel.Channel{ca, cb} {
			if _, err := ch.Send(ctx, command.MustCommand("ECHO", "x")); err != nil {
				t.Fatalf("Send() = %v", err)
			}
		}
	}

	// The last writers and handlers end on their own, just after the replies
	// went out: wait for the structure, within the test's deadline.
	const (
		connectFrame = "grpcchannel.(*Server).Connect("
		hosted       = "channel.(*Channel).hostedReadLoop("
		own          = "channel.(*Channel).ownReadLoop("
		chanPkg      = "exchangekit/exchange/channel."
	)
	var stacks []string
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		stacks = goroutineStacks()
		if countStacks(stacks, chanPkg) == 2*n {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("goroutines running channel code: %d, want %d (a reader per side):\n%s",
				countStacks(stacks, chanPkg), 2*n, strings.Join(stacks, "\n\n"))
		}
	}
	if got := countStacks(stacks, connectFrame); got != n {
		t.Errorf("Connect handler goroutines = %d, want %d (one per stream)", got, n)
	}
	if got := countStacks(stacks, connectFrame, hosted); got != n {
		t.Errorf("Connect handlers hosting the read loop = %d, want %d: the server's reader needs no goroutine of its own", got, n)
	}
	if got := countStacks(stacks, own); got != n {
		t.Errorf("client readers = %d, want %d (one per client channel)", got, n)
	}
	for _, f := range []string{"channel.(*Channel).writeLoop(", "channel.(*Channel).handleGo("} {
		if got := countStacks(stacks, f); got != 0 {
			t.Errorf("idle goroutines in %s = %d, want none", f, got)
		}
	}
}
