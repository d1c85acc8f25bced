package channel_test

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// gateConn is a Conn that records the ids of the frames sent, holds the Send
// of one chosen id until released, and answers every two-way command with a
// reply on Recv.
type gateConn struct {
	mu      sync.Mutex
	sent    []string
	gateID  string        // Send of this id waits for gate
	gate    chan struct{} // closed to release it
	held    chan struct{} // closed once that Send waits
	replies chan *channel.Frame
	done    chan struct{}
	once    sync.Once
}

func newGateConn() *gateConn {
	return &gateConn{replies: make(chan *channel.Frame, 16), done: make(chan struct{})}
}

// hold makes the next Send of id wait until the returned func is called.
func (g *gateConn) hold(id string) (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gateID, g.gate, g.held = id, make(chan struct{}), make(chan struct{})
	gate := g.gate
	return func() { close(gate) }
}

func (g *gateConn) Send(f *channel.Frame) error {
	c := f.Command
	g.mu.Lock()
	g.sent = append(g.sent, c.ID)
	var gate, held chan struct{}
	if c.ID == g.gateID {
		gate, held = g.gate, g.held
		g.gateID = ""
	}
	g.mu.Unlock()
	if gate != nil {
		close(held)
		select {
		case <-gate:
		case <-g.done:
			return channel.ErrClosed
		}
	}
	if !c.OneWay {
		g.replies <- &channel.Frame{Reply: &command.Reply{CommandID: c.ID, Type: c.Type, Status: command.StatusSucceeded}}
	}
	return nil
}

func (g *gateConn) Recv() (*channel.Frame, error) {
	select {
	case f := <-g.replies:
		return f, nil
	case <-g.done:
		return nil, channel.ErrClosed
	}
}

func (g *gateConn) Close() error {
	g.once.Do(func() { close(g.done) })
	return nil
}

func (g *gateConn) sentIDs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sent)
}

// A frame queued while a Send writes its command inline, with the writer
// goroutine parked for more (it lingers after a burst), must be written even
// if the parked writer's linger ends meanwhile: the queue belongs to the
// inline writer then. The parked writer used to drop a queue grown by the
// burst on its way out, frames and all, when its linger ended, so the frame
// was never sent: a reply lost that way left its Send waiting until its
// deadline (issue 8, decision 0043's lost round trip).
func TestFrameQueuedDuringInlineWriteSurvivesParkedWritersEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn := newGateConn()
		ch := channel.New(conn, nil, channel.Config{})
		defer ch.Close()
		ctx := t.Context()
		notify := func(id string) {
			t.Helper()
			if err := ch.Notify(ctx, &command.Command{ID: id, Type: "EVENT"}); err != nil {
				t.Fatalf("Notify(%s) = %v", id, err)
			}
		}

		// A burst: the writer holds n0 on the Conn while five more queue,
		// which grows the write queue beyond what a drained queue keeps.
		release := conn.hold("n0")
		notify("n0")
		<-conn.held
		for _, id := range []string{"n1", "n2", "n3", "n4", "n5"} {
			notify(id)
		}
		release()
		synctest.Wait() // the writer has written them all and parked, lingering

		// A lone Send writes its command inline, and is held on the Conn
		// while n6 is queued behind it.
		release = conn.hold("c1")
		sent := make(chan error, 1)
		go func() {
			_, err := ch.Send(ctx, &command.Command{ID: "c1", Type: "ECHO"})
			sent <- err
		}()
		<-conn.held
		notify("n6")

		// The parked writer's linger ends while the inline write is held.
		time.Sleep(2 * time.Second)
		synctest.Wait()
		release()
		if err := <-sent; err != nil {
			t.Fatalf("Send(c1) = %v", err)
		}
		synctest.Wait()
		want := []string{"n0", "n1", "n2", "n3", "n4", "n5", "c1", "n6"}
		if got := conn.sentIDs(); !slices.Equal(got, want) {
			t.Fatalf("frames written %v, want %v", got, want)
		}
	})
}
