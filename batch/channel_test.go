package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// twin is the controller side of embedded channels to "connectors" (a
// channel with a command.Mux on the other end of an embedded pipe), wrapped
// in a tiny Sender: the controller's Send in miniature.
type twin struct {
	mu    sync.Mutex                  // protects chans and conns
	chans map[string]*channel.Channel // target → controller side
	conns []*channel.Channel          // every channel, both sides, to close
}

func newTwin(t testing.TB) *twin {
	tw := &twin{chans: map[string]*channel.Channel{}}
	t.Cleanup(tw.close)
	return tw
}

// connect attaches a connector for target that answers with mux.
func (tw *twin) connect(target string, mux *command.Mux) {
	a, b := embedded.Pipe()
	ctrl := channel.New(a, nil, channel.Config{})
	conn := channel.New(b, mux, channel.Config{})
	tw.mu.Lock()
	defer tw.mu.Unlock()
	tw.chans[target] = ctrl
	tw.conns = append(tw.conns, ctrl, conn)
}

// disconnect closes target's channel, as a connector crash would.
func (tw *twin) disconnect(target string) {
	tw.mu.Lock()
	ch := tw.chans[target]
	delete(tw.chans, target)
	tw.mu.Unlock()
	if ch != nil {
		ch.Close()
	}
}

func (tw *twin) close() {
	tw.mu.Lock()
	conns := tw.conns
	tw.conns = nil
	tw.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (tw *twin) Send(ctx context.Context, target string, cmd *command.Command) (*command.Reply, error) {
	tw.mu.Lock()
	ch := tw.chans[target]
	tw.mu.Unlock()
	if ch == nil {
		return nil, fmt.Errorf("controller: no channel for target %q: %w", target, batch.ErrNoChannel)
	}
	return ch.Send(ctx, cmd)
}

type echo struct {
	Text string `json:"text"`
}

// connectorMux answers ECHO, and records the ids of the commands it ran.
func connectorMux(seen *[]string, mu *sync.Mutex) *command.Mux {
	mux := command.NewMux()
	mux.Register("ECHO", command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		mu.Lock()
		*seen = append(*seen, c.ID)
		mu.Unlock()
		return command.Succeeded(c, json.RawMessage(c.Payload))
	}))
	return mux
}

func echoCommands(texts ...string) []batch.Command {
	var out []batch.Command
	for _, s := range texts {
		c, err := command.NewCommand("ECHO", echo{Text: s})
		if err != nil {
			panic(err)
		}
		out = append(out, batch.Command{Command: c})
	}
	return out
}

func TestRunnerOverEmbeddedChannels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tw := newTwin(t)
		e := newEnv(t, batch.Config{MaxRetry: 2}, tw, nil)
		e.setTimeout(time.Hour)
		e.run()

		// An offline target: the batch waits, without using its retries.
		b1 := e.execute(batch.Batch{ID: "b1", TargetID: "t1", Commands: echoCommands("one", "two", "three")})
		synctest.Wait()
		if b := e.get("b1"); b.Status != batch.StatusPending || b.Retry != 0 {
			t.Fatalf("offline batch = %v retry %d", b.Status, b.Retry)
		}

		// The target's connector connects and its channel registers: the
		// batch runs at once, in order, over the real channel semantics.
		var mu sync.Mutex
		var seen []string
		tw.connect("t1", connectorMux(&seen, &mu))
		register(t, e.mem, "ch1", "t1")
		b := e.await("b1")
		if b.Status != batch.StatusSucceeded {
			t.Fatalf("batch = %v %q", b.Status, b.Error)
		}
		var wantIDs []string
		for i, c := range b.Commands {
			wantIDs = append(wantIDs, b1.Commands[i].Command.ID)
			got, err := command.Decode[echo](c.Reply.Payload)
			if err != nil || got.Text != []string{"one", "two", "three"}[i] {
				t.Errorf("command %d reply = %q, %v", i, c.Reply.Payload, err)
			}
		}
		mu.Lock()
		if diff := cmp.Diff(wantIDs, seen); diff != "" {
			t.Errorf("connector saw (-want +got):\n%s", diff)
		}
		mu.Unlock()

		// A command type the connector does not handle fails with the
		// channel's plain message.
		e.execute(batch.Batch{ID: "b2", TargetID: "t1", MaxRetry: new(0), Commands: []batch.Command{{Command: &command.Command{Type: "NOPE"}}}})
		if b := e.await("b2"); b.Status != batch.StatusError || !strings.Contains(b.Error, `no handler for command type "NOPE"`) {
			t.Errorf("unknown command: batch = %v %q", b.Status, b.Error)
		}
	})
}

func TestRunnerConnectorCrashMidBatchResendsSameID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tw := newTwin(t)
		e := newEnv(t, batch.Config{}, tw, nil)
		e.run()

		var mu sync.Mutex
		var seen []string
		var crashed atomic.Bool
		mux := connectorMux(&seen, &mu)
		// The first connector dies while handling the second command.
		first := command.NewMux()
		first.Register("ECHO", command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
			mu.Lock()
			n := len(seen)
			seen = append(seen, c.ID)
			mu.Unlock()
			if n == 1 && crashed.CompareAndSwap(false, true) {
				go tw.disconnect("t1")
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return command.Succeeded(c, json.RawMessage(c.Payload))
		}))
		tw.connect("t1", first)
		created := e.execute(batch.Batch{ID: "b1", TargetID: "t1", Commands: echoCommands("a", "b", "c")})
		synctest.Wait()
		b := e.get("b1")
		if b.Status != batch.StatusPending || b.Retry != 1 {
			t.Fatalf("after the crash: %v retry %d %q", b.Status, b.Retry, b.Error)
		}
		t.Logf("recorded failure: %s", b.Error)
		tw.connect("t1", mux)
		register(t, e.mem, "ch2", "t1")
		if b := e.await("b1"); b.Status != batch.StatusSucceeded {
			t.Fatalf("batch = %v %q", b.Status, b.Error)
		}
		ids := []string{created.Commands[0].Command.ID, created.Commands[1].Command.ID, created.Commands[1].Command.ID, created.Commands[2].Command.ID}
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff(ids, seen); diff != "" {
			t.Errorf("connector saw (-want +got):\n%s", diff)
		}
	})
}

// BenchmarkRunnerEmbedded measures commands per second through the runner
// over the embedded twin: batches of 10 ECHO commands spread over 64
// targets, a Memory store. ns/op is per command.
func BenchmarkRunnerEmbedded(b *testing.B) {
	const targets, perBatch = 64, 10
	tw := newTwin(b)
	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{CommandID: c.ID, Type: c.Type, Status: command.StatusSucceeded, Payload: c.Payload}, nil
	})
	for i := range targets {
		tw.connect(fmt.Sprintf("t%d", i), mux)
	}
	r, err := batch.NewRunner(batch.Config{Concurrency: targets}, tw, state.NewBatchStore(state.NewMemory()))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	defer func() {
		cancel()
		stop := time.NewTimer(defaultTestTimeout)
		defer stop.Stop()
		select {
		case <-runDone:
		case <-stop.C:
			b.Error("Run did not return after its context was cancelled")
		}
	}()

	n := (b.N + perBatch - 1) / perBatch
	all := make(chan struct{})
	var done, failed atomic.Int64
	stop := r.ObserveKey("bench", func(bt batch.Batch) {
		if bt.Status != batch.StatusSucceeded {
			failed.Add(1)
		}
		if done.Add(1) == int64(n) {
			close(all)
		}
	})
	defer stop()
	cmds := echoCommands(strings.Split("a b c d e f g h i j", " ")...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range n {
		in := batch.Batch{Key: "bench", TargetID: fmt.Sprintf("t%d", i%targets), Commands: make([]batch.Command, perBatch)}
		for j := range perBatch {
			in.Commands[j] = batch.Command{Command: &command.Command{Type: cmds[j].Command.Type, Payload: cmds[j].Command.Payload}}
		}
		if _, err := r.ExecuteBatch(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		b.Fatalf("%d of %d batches done: %v", done.Load(), n, ctx.Err())
	}
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d batches failed", f)
	}
	b.ReportMetric(float64(n*perBatch)/b.Elapsed().Seconds(), "cmds/s")
}
