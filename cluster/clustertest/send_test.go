package clustertest_test

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
)

// TestAnyNodeSendsToAnyTarget: a target whose only connector is on node A is
// reached by Send and SendPrimary from the other nodes (forwarded in one
// hop), and the errors keep their types across the hop.
func TestAnyNodeSendsToAnyTarget(t *testing.T) {
	e := newEnv(t, 3)
	nodes := e.h.Nodes()
	a, others := nodes[0], nodes[1:]

	var blocked atomic.Int32 // BLOCK handlers running
	release := make(chan struct{}, 1)
	mux := command.NewMux()
	addEcho(mux)
	mux.RegisterFunc(typeBlock, func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		blocked.Add(1)
		defer blocked.Add(-1)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			return command.Succeeded(cmd, nil)
		}
	})
	c := e.connect("t-any", a, connOpts{mux: mux, only: true, cfg: func(cfg *connector.Config) {
		cfg.Channel.MaxHandlers = 1 // a second command at once is refused busy
	}})
	ch := e.waitConnected(c)
	e.waitPrimary("t-any", ch)

	ctx := t.Context()
	// The connector handles one command at a time and frees its handler slot
	// just after the previous handler returned: a busy answer until then is
	// retried (a bounded number of times), as a caller would.
	notBusy := func(send func() error) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			var busy *channel.BusyError
			err := send()
			if !errors.As(err, &busy) || time.Now().After(deadline) {
				return err
			}
			runtime.Gosched() // the slot frees as the handler's goroutine finishes
		}
	}
	for _, m := range others {
		ctl := e.ctl(m)
		for _, primary := range []bool{false, true} {
			send := ctl.ctrl.Send
			if primary {
				send = ctl.ctrl.SendPrimary
			}
			cmd := echo("from " + m.ID)
			var r *command.Reply
			err := notBusy(func() (err error) { r, err = send(ctx, "t-any", cmd); return err })
			if err != nil {
				t.Fatalf("%s: send (primary %v): %v", m.ID, primary, err)
			}
			if r.Status != command.StatusSucceeded || string(r.Payload) != string(cmd.Payload) || r.CommandID != cmd.ID {
				t.Fatalf("%s: reply %+v to %s", m.ID, r, cmd)
			}
		}

		// No channel: at once, typed.
		var nc *controller.NoChannelError
		if _, err := ctl.ctrl.Send(ctx, "t-nobody", echo("x")); !errors.As(err, &nc) || nc.Primary {
			t.Fatalf("%s: Send to a target without channel = %v, want a *NoChannelError", m.ID, err)
		}
		if _, err := ctl.ctrl.SendPrimary(ctx, "t-nobody", echo("x")); !errors.As(err, &nc) || !nc.Primary {
			t.Fatalf("%s: SendPrimary to a target without channel = %v, want a *NoChannelError{Primary}", m.ID, err)
		}

		// The remote handler's error.
		var re *channel.RemoteError
		err := notBusy(func() error {
			_, err := ctl.ctrl.Send(ctx, "t-any", &command.Command{ID: command.NewID(), Type: typeFail})
			return err
		})
		if !errors.As(err, &re) {
			t.Fatalf("%s: FAIL = %v, want a *channel.RemoteError", m.ID, err)
		}
		var se *controller.SendError
		if !errors.As(err, &se) || se.NodeID != a.ID {
			t.Fatalf("%s: FAIL = %v, want a *controller.SendError via %s", m.ID, err, a.ID)
		}

		// A command the connector does not know.
		var uc *channel.UnknownCommandError
		if err := notBusy(func() error {
			_, err := ctl.ctrl.Send(ctx, "t-any", &command.Command{ID: command.NewID(), Type: "NOPE"})
			return err
		}); !errors.As(err, &uc) {
			t.Fatalf("%s: unknown type = %v, want a *channel.UnknownCommandError", m.ID, err)
		}

		// The ctx deadline goes along: the forwarded send times out.
		// (The connector frees a handler slot just after the previous
		// handler returned: a busy answer until then is retried.)
		var start time.Time
		err = notBusy(func() error {
			tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			start = time.Now()
			_, err := ctl.ctrl.Send(tctx, "t-any", &command.Command{ID: command.NewID(), Type: typeBlock})
			return err
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: BLOCK with a 300ms deadline = %v, want context.DeadlineExceeded", m.ID, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%s: the timeout took %v", m.ID, d)
		}
		waitFor(t, "the BLOCK handler to end at its deadline", func() bool { return blocked.Load() == 0 })

		// Busy with retry-after: the connector handles one command at a time.
		bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
		first := make(chan error, 1)
		go func() {
			first <- notBusy(func() error {
				_, err := ctl.ctrl.Send(bctx, "t-any", &command.Command{ID: command.NewID(), Type: typeBlock})
				return err
			})
		}()
		waitFor(t, "a BLOCK running", func() bool { return blocked.Load() == 1 })
		var busy *channel.BusyError
		_, err = ctl.ctrl.Send(ctx, "t-any", echo("second"))
		if !errors.As(err, &busy) || !busy.Remote || busy.RetryAfter <= 0 {
			t.Fatalf("%s: second command while one runs = %v, want a remote *channel.BusyError with RetryAfter", m.ID, err)
		}
		release <- struct{}{}
		if err := <-first; err != nil {
			t.Fatalf("%s: the released BLOCK = %v", m.ID, err)
		}
		bcancel()
		waitFor(t, "the BLOCK handler to end", func() bool { return blocked.Load() == 0 })
	}
}
