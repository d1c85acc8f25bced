package connector_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

// countingMux registers DO, which counts its runs and answers the run number.
func countingMux(runs *atomic.Int32) *command.Mux {
	mux := command.NewMux()
	mux.Register("DO", command.Typed(func(context.Context, struct{}) (int32, error) { return runs.Add(1), nil }))
	return mux
}

// sendID sends DO with a fixed id from the controller and returns the run
// number answered.
func sendID(ctx context.Context, t *testing.T, p *peer, id string) int32 {
	t.Helper()
	r, err := p.ch.Send(ctx, &command.Command{ID: id, Type: "DO"})
	if err != nil {
		t.Fatalf("Send(DO %s) = %v", id, err)
	}
	n, err := command.Decode[int32](r.Payload)
	if err != nil || r.CommandID != id {
		t.Fatalf("reply %+v: payload %v, want the run number for %s", r, err, id)
	}
	return n
}

func TestDedupSameIDRunsOnce(t *testing.T) {
	ctx := testContext(t)
	var runs atomic.Int32
	c, fc, p := connected(ctx, t, testConfig(t), countingMux(&runs))

	first := sendID(ctx, t, p, "cmd-1")
	again := sendID(ctx, t, p, "cmd-1")
	if runs.Load() != 1 || first != 1 || again != 1 {
		t.Errorf("runs = %d, replies %d and %d; want one run and the same reply twice", runs.Load(), first, again)
	}
	if n := sendID(ctx, t, p, "cmd-2"); n != 2 {
		t.Errorf("a new id answered %d, want a second run", n)
	}

	// The window survives reconnections: a batch retry arrives on a new channel.
	_ = p.ch.Close()
	p2 := fc.next(ctx)
	if n := sendID(ctx, t, p2, "cmd-1"); n != 1 || runs.Load() != 2 {
		t.Errorf("after reconnecting: reply %d, runs %d; want 1 (from the window) and 2", n, runs.Load())
	}
	if got := connector.WindowLen(c); got != 2 {
		t.Errorf("window holds %d, want 2", got)
	}
}

func TestDedupWindowIsBounded(t *testing.T) {
	ctx := testContext(t)
	var runs atomic.Int32
	cfg := testConfig(t)
	cfg.DedupWindow = 2
	c, _, p := connected(ctx, t, cfg, countingMux(&runs))
	for _, id := range []string{"a", "b", "c"} {
		sendID(ctx, t, p, id)
	}
	if got := connector.WindowLen(c); got != 2 {
		t.Errorf("window holds %d, want its bound 2", got)
	}
	if n := sendID(ctx, t, p, "c"); n != 3 {
		t.Errorf("c again answered %d, want 3 from the window", n)
	}
	if n := sendID(ctx, t, p, "a"); n != 4 { // evicted, oldest first
		t.Errorf("a again answered %d, want a fourth run (a was evicted)", n)
	}
	if n := sendID(ctx, t, p, "b"); n != 5 { // evicted by a's re-insertion
		t.Errorf("b again answered %d, want a fifth run", n)
	}
}

func TestDedupDisabled(t *testing.T) {
	ctx := testContext(t)
	var runs atomic.Int32
	cfg := testConfig(t)
	cfg.DedupWindow = -1
	_, _, p := connected(ctx, t, cfg, countingMux(&runs))
	sendID(ctx, t, p, "x")
	if n := sendID(ctx, t, p, "x"); n != 2 {
		t.Errorf("second x answered %d, want a second run without a window", n)
	}
}

func TestDedupForgetsFailures(t *testing.T) {
	ctx := testContext(t)
	var runs atomic.Int32
	mux := command.NewMux()
	mux.RegisterFunc("FLAKY", func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
		switch runs.Add(1) {
		case 1:
			return nil, errors.New("transient")
		case 2:
			return command.Failed(cmd, "still failing"), nil
		}
		return command.Succeeded(cmd, "done")
	})
	_, _, p := connected(ctx, t, testConfig(t), mux)
	cmd := &command.Command{ID: "flaky-1", Type: "FLAKY"}
	var remote *channel.RemoteError
	if _, err := p.ch.Send(ctx, cmd); !errors.As(err, &remote) {
		t.Fatalf("first FLAKY = %v, want a *channel.RemoteError", err)
	}
	if r, err := p.ch.Send(ctx, cmd); err != nil || r.Status != command.StatusError {
		t.Fatalf("second FLAKY = %+v, %v; want an ERROR reply (the retry ran again)", r, err)
	}
	for range 2 {
		if r, err := p.ch.Send(ctx, cmd); err != nil || !r.Succeeded() {
			t.Fatalf("FLAKY = %+v, %v; want SUCCEEDED", r, err)
		}
	}
	if runs.Load() != 3 {
		t.Errorf("runs = %d, want 3 (failures retried, the success remembered)", runs.Load())
	}
}

// A duplicate that arrives while the first run is still going, here on a new
// channel after the controller lost the first, waits for that run: the
// handler runs once, its context survives the lost channel, and the retry
// gets its reply. (synctest makes "the retry is waiting" observable.)
func TestDedupDuplicateJoinsRunningCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		var runs atomic.Int32
		entered, release := make(chan struct{}), make(chan struct{})
		mux := command.NewMux()
		mux.RegisterFunc("LONG", func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
			runs.Add(1)
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, fmt.Errorf("handler context ended: %w", ctx.Err())
			}
			return command.Succeeded(cmd, "finished")
		})
		fc := newFakeController(t, withRaw())
		c := newConnector(t, testConfig(t), mux, fc.dialer())
		start(t, c)
		p1 := fc.next(ctx)

		cmd := &command.Command{ID: "long-1", Type: "LONG"}
		p1.rawSend(t, cmd)
		<-entered
		p1.close() // the controller loses the channel mid-command
		p2 := fc.next(ctx)
		p2.rawSend(t, cmd) // the retry, same id
		synctest.Wait()    // everyone is blocked: the retry waits for the first run
		if runs.Load() != 1 {
			t.Fatalf("runs = %d before release, want 1", runs.Load())
		}
		close(release)
		r := p2.rawReply(t)
		if out, _ := command.Decode[string](r.Payload); !r.Succeeded() || r.CommandID != "long-1" || out != "finished" {
			t.Errorf("retry reply = %+v (%q), want the first run's SUCCEEDED %q", r, out, "finished")
		}
		if runs.Load() != 1 {
			t.Errorf("runs = %d, want 1", runs.Load())
		}
		_ = c.Close()
	})
}

// A reused id with a different body is another command, not a retry: it must
// not be answered with the first command's reply, nor run. It is refused with
// ERROR 409, and the first command's retries still get their reply.
func TestDedupRefusesReusedIDWithDifferentBody(t *testing.T) {
	ctx := testContext(t)
	var runs atomic.Int32
	mux := command.NewMux()
	echo := func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		runs.Add(1)
		return &command.Reply{Status: command.StatusSucceeded, Payload: cmd.Payload}, nil
	}
	mux.RegisterFunc("ECHO", echo)
	mux.RegisterFunc("SHOUT", echo)
	_, _, p := connected(ctx, t, testConfig(t), mux)

	first := &command.Command{ID: "cmd-1", Type: "ECHO", Payload: []byte(`"a"`)}
	if r, err := p.ch.Send(ctx, first); err != nil || !r.Succeeded() || string(r.Payload) != `"a"` {
		t.Fatalf("Send(%s a) = %+v, %v; want SUCCEEDED \"a\"", first, r, err)
	}
	for _, other := range []*command.Command{
		{ID: "cmd-1", Type: "ECHO", Payload: []byte(`"b"`)},  // another payload
		{ID: "cmd-1", Type: "SHOUT", Payload: []byte(`"a"`)}, // another type
	} {
		r, err := p.ch.Send(ctx, other)
		if err != nil {
			t.Fatalf("Send(%s %s) = %v, want an ERROR reply", other, other.Payload, err)
		}
		const want = "command id cmd-1 was already used for a different command"
		if r.Status != command.StatusError || r.Code != 409 || r.Error != want || r.CommandID != "cmd-1" {
			t.Errorf("Send(%s %s) = %+v (payload %s), want ERROR 409 %q", other, other.Payload, r, r.Payload, want)
		}
	}
	// Metadata is not part of the command's identity (tracing ids differ
	// between retries): the retry of the first command still gets its reply.
	retry := first.Clone()
	retry.Metadata = map[string]string{"traceparent": "retry"}
	if r, err := p.ch.Send(ctx, retry); err != nil || !r.Succeeded() || string(r.Payload) != `"a"` {
		t.Errorf("retry of %s = %+v, %v; want the remembered SUCCEEDED \"a\"", first, r, err)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// A reused id with a different body that arrives while the first command is
// still running (here on a new channel, after the controller lost the first)
// is refused at once: it neither waits for nor gets the first command's
// reply, and the first command's retry still does.
func TestDedupRefusesReusedIDWhileRunning(t *testing.T) {
	ctx := testContext(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	mux := command.NewMux()
	mux.RegisterFunc("LONG", func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		if runs.Add(1) == 1 {
			close(entered)
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, fmt.Errorf("handler context ended: %w", ctx.Err())
		}
		return &command.Reply{Status: command.StatusSucceeded, Payload: cmd.Payload}, nil
	})
	_, fc, p1 := connected(ctx, t, testConfig(t), mux)

	first := &command.Command{ID: "long-1", Type: "LONG", Payload: []byte(`1`)}
	lost := make(chan error, 1)
	go func() {
		_, err := p1.ch.Send(ctx, first)
		lost <- err
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the first LONG never started")
	}
	p1.close() // the controller loses the channel mid-command
	if err := <-lost; !errors.Is(err, channel.ErrClosed) {
		t.Errorf("first LONG on the lost channel = %v, want ErrClosed", err)
	}
	p2 := fc.next(ctx)
	r, err := p2.ch.Send(ctx, &command.Command{ID: "long-1", Type: "LONG", Payload: []byte(`2`)})
	if err != nil || r.Status != command.StatusError || r.Code != 409 {
		t.Errorf("LONG with the same id and another payload = %+v, %v; want ERROR 409 at once", r, err)
	}
	close(release)
	if r, err := p2.ch.Send(ctx, first); err != nil || !r.Succeeded() || string(r.Payload) != `1` {
		t.Errorf("retry of the first LONG = %+v, %v; want its SUCCEEDED 1", r, err)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// TestDedupSkipsFreshIDs: a command whose id was made for that delivery
// alone (command.Command.FreshID: by its sender's channel, or by a caller
// that says so) never comes again, so the window neither remembers it nor
// answers it; a command with the caller's own id is remembered.
func TestDedupSkipsFreshIDs(t *testing.T) {
	ctx := testContext(t)
	var runs atomic.Int32
	c, _, p := connected(ctx, t, testConfig(t), countingMux(&runs))
	for want := int32(1); want <= 2; want++ {
		r, err := p.ch.Send(ctx, &command.Command{Type: "DO"})
		if err != nil {
			t.Fatalf("Send(DO) = %v", err)
		}
		if n, err := command.Decode[int32](r.Payload); err != nil || n != want {
			t.Fatalf("reply %d (%v), want run %d", n, err, want)
		}
	}
	if got := connector.WindowLen(c); got != 0 {
		t.Errorf("window holds %d after two commands with fresh ids, want 0", got)
	}
	if n := sendID(ctx, t, p, "own"); n != 3 {
		t.Fatalf("reply %d, want run 3", n)
	}
	if n := sendID(ctx, t, p, "own"); n != 3 || runs.Load() != 3 {
		t.Errorf("the caller's id again: reply %d, runs %d; want 3 from the window", n, runs.Load())
	}
	for want := int32(4); want <= 5; want++ { // the caller vouches that the id is fresh
		r, err := p.ch.Send(ctx, &command.Command{ID: "vouched", Type: "DO", FreshID: true})
		if err != nil {
			t.Fatalf("Send(DO vouched) = %v", err)
		}
		if n, _ := command.Decode[int32](r.Payload); n != want {
			t.Errorf("id said fresh, sent again: reply %d, want run %d (not remembered)", n, want)
		}
	}
	if got := connector.WindowLen(c); got != 1 {
		t.Errorf("window holds %d, want 1 (the caller's id)", got)
	}
}
