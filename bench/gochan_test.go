package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// goRequest and goReply are the raw Go channel baseline's messages: a
// request carries an id, the reply names it.
type goRequest struct {
	id      uint64
	payload []byte
}

type goReply struct {
	id      uint64
	payload []byte
}

// goChanClient is what a Go user would write for request/reply with
// correlation inside one process, without Exchange: a server goroutine reads
// requests from a channel and answers inline on a replies channel; a
// dispatcher goroutine hands each reply to its caller through a map of
// pending calls, each waiting on a channel of its own.
type goChanClient struct {
	requests chan goRequest
	mu       sync.Mutex
	seq      uint64
	pending  map[uint64]chan []byte
}

// rawGoChan starts the baseline's server and dispatcher until the test ends
// and returns its round trip.
func rawGoChan(tb testing.TB) roundTrip {
	c := &goChanClient{requests: make(chan goRequest, 256), pending: make(map[uint64]chan []byte)}
	replies := make(chan goReply, 256)
	var wg sync.WaitGroup
	wg.Go(func() { // the server: echo every request
		defer close(replies)
		for r := range c.requests {
			replies <- goReply(r)
		}
	})
	wg.Go(func() { // the dispatcher: correlate replies with callers
		for r := range replies {
			c.mu.Lock()
			ch := c.pending[r.id]
			delete(c.pending, r.id)
			c.mu.Unlock()
			if ch != nil {
				ch <- r.payload
			}
		}
	})
	tb.Cleanup(func() { close(c.requests); wg.Wait() })
	return c.roundTrip
}

func (c *goChanClient) roundTrip(ctx context.Context) error {
	ch := make(chan []byte, 1)
	c.mu.Lock()
	c.seq++
	id := c.seq
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
	select {
	case c.requests <- goRequest{id: id, payload: payload}:
	case <-ctx.Done():
		forget()
		return ctx.Err()
	}
	select {
	case p := <-ch:
		if len(p) != len(payload) {
			return fmt.Errorf("echo: got %d bytes", len(p))
		}
		return nil
	case <-ctx.Done():
		forget()
		return ctx.Err()
	}
}

// BenchmarkRawGoChan: the raw Go channel baseline of the embedded twin.
func BenchmarkRawGoChan(b *testing.B) {
	runContender(b, rawGoChan(b))
}
