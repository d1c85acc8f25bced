package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

func init() { subcommands = append(subcommands, newDemoCommand) }

func newDemoCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		lf        logFlags
		clustered bool
	)
	cmd := &cobra.Command{
		Use:   "demo [--cluster]",
		Short: "One process: an embedded controller and connectors, narrated",
		Long: `Runs a controller and four connectors for three targets in one process, over
the embedded (in-process) channel, and narrates: registration, primary
election, commands and replies, the primary's connector killed and a new
primary elected, and a batch of commands stored for a target without a
connector, then delivered in order once one connects.

With --cluster: three real cluster nodes in the process (raft with data in a
temporary directory, gossip and node-to-node links over gRPC on loopback), a
controller on each and two connectors: the cluster forms, a command sent on one
node reaches a connector on another, the leader is stopped, a new leader is
elected, and commands still flow.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lf.logger(stderr)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if clustered {
				return runClusterDemo(cmd.Context(), stdout, log)
			}
			return runDemo(cmd.Context(), stdout, log)
		},
	}
	cmd.Flags().BoolVar(&clustered, "cluster", false, "three cluster nodes in one process: forwarding, the leader stopped, a new one elected")
	cmd.Flags().StringVar(&lf.level, "log-level", "error", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&lf.format, "log-format", "text", "log format: text or json")
	return cmd
}

// demo holds the running pieces of the demo.
type demo struct {
	out    io.Writer
	log    *slog.Logger
	ctx    context.Context // the demo's; connectors run until it ends or they are closed
	mu     sync.Mutex      // serialises narration
	t0     time.Time
	lis    *embedded.Listener
	ctrl   *controller.Controller
	runner *batch.Runner

	connectors map[string]*demoConnector
	elected    chan controller.Event // primary elections, from the controller's listener
	told       chan told             // what connectors were told about their role
	quiet      bool                  // set once the story is over; protected by mu
}

// told is a PRIMARY notification as a connector saw it.
type told struct {
	connector, target string
	primary           bool
	epoch             uint64
}

type demoConnector struct {
	c    *connector.Connector
	done chan error
}

func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.quiet {
		return
	}
	fmt.Fprintf(d.out, "[%6.3fs] %s\n", time.Since(d.t0).Seconds(), fmt.Sprintf(format, args...))
}

func runDemo(ctx context.Context, out io.Writer, log *slog.Logger) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d := &demo{out: out, log: log, t0: time.Now(), lis: embedded.Listen(),
		connectors: map[string]*demoConnector{}, elected: make(chan controller.Event, 64), told: make(chan told, 64)}

	cfg := controller.DefaultConfig()
	cfg.NodeID = "demo-node"
	cfg.Logger = log
	cfg.HealthInterval = 2 * time.Second
	cfg.Handler = command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
		d.say("controller   <- %s from a connector: %s", c.Type, c.Payload)
		return command.Succeeded(c, map[string]string{"ack": "controller got it"})
	})
	cfg.OnEvent = func(ev controller.Event) {
		switch ev.Kind {
		case controller.EventChannelRegistered:
			d.say("controller   registered channel %.8s… for target %s", ev.ChannelID, ev.TargetID)
		case controller.EventChannelUnregistered:
			d.say("controller   channel %.8s… of target %s is gone", ev.ChannelID, ev.TargetID)
		case controller.EventPrimaryElected:
			d.say("controller   PRIMARY of %s is channel %.8s… (epoch %d)", ev.TargetID, ev.ChannelID, ev.Epoch)
			select {
			case d.elected <- ev:
			default:
			}
		case controller.EventPrimaryEvicted:
			d.say("controller   %s has no primary any more (epoch %d)", ev.TargetID, ev.Epoch)
		}
	}
	store := standalone.New(cfg.NodeID)
	defer store.Close()
	d.ctrl, err = controller.New(cfg, d.lis, store)
	if err != nil {
		return err
	}
	d.runner, err = batch.NewRunner(batch.DefaultConfig(), d.ctrl, state.NewBatchStore(store))
	if err != nil {
		return err
	}
	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- d.ctrl.Run(ctx) }()
	runnerDone := make(chan error, 1)
	go func() { runnerDone <- d.runner.Run(ctx) }()
	defer func() {
		for id := range d.connectors {
			d.stop(id)
		}
		_ = d.runner.Close()
		<-runnerDone
		_ = d.ctrl.Close()
		if e := <-ctrlDone; e != nil && err == nil {
			err = e
		}
	}()

	d.say("demo         a controller (node %s) over the embedded channel; no network", d.ctrl.NodeID())
	for _, c := range []struct{ id, target string }{{"alpha-1", "alpha"}, {"alpha-2", "alpha"}, {"beta-1", "beta"}} {
		if err := d.start(ctx, c.id, c.target); err != nil {
			return err
		}
	}
	if err := d.waitChannels(ctx, 3); err != nil {
		return err
	}
	if err := d.waitRoles(ctx, 3); err != nil {
		return err
	}

	// Commands to targets, answered by whichever connector holds a channel.
	for _, target := range []string{"alpha", "beta"} {
		if err := d.echo(ctx, target, "hello "+target); err != nil {
			return err
		}
	}
	// A connector sends a command to the controller.
	reply, err := d.connectors["beta-1"].c.Send(ctx, command.MustCommand("REPORT", map[string]any{"disk": "82%"}))
	if err != nil {
		return fmt.Errorf("connector send: %w", err)
	}
	d.say("beta-1       <- reply %s %s", reply.Status, reply.Payload)

	// Kill the primary's connector and watch the election.
	info, ok := d.ctrl.Target("alpha")
	if !ok || info.PrimaryID == "" {
		return errors.New("demo: target alpha has no primary")
	}
	var victim string
	for _, ch := range info.Channels {
		if ch.ID == info.PrimaryID {
			victim = ch.ConnectorID
		}
	}
	drain(d.elected)
	d.say("demo         killing %s, the primary of alpha (epoch %d)", victim, info.Epoch)
	killed := time.Now()
	d.stop(victim)
	select {
	case ev := <-d.elected:
		if ev.TargetID != "alpha" {
			return fmt.Errorf("demo: unexpected election for %s", ev.TargetID)
		}
		d.say("demo         new primary of alpha elected %s after the kill (epoch %d)",
			time.Since(killed).Round(time.Microsecond), ev.Epoch)
	case <-ctx.Done():
		return fmt.Errorf("demo: no new primary: %w", ctx.Err())
	}
	for learned := false; !learned; {
		select {
		case t := <-d.told:
			if t.target == "alpha" && t.primary && t.connector != victim {
				d.say("demo         %s knows it is the primary %s after the kill", t.connector,
					time.Since(killed).Round(time.Microsecond))
				learned = true
			}
		case <-ctx.Done():
			return fmt.Errorf("demo: the new primary was never told: %w", ctx.Err())
		}
	}
	if err := d.echo(ctx, "alpha", "still there?"); err != nil {
		return err
	}
	if _, err := d.ctrl.Send(ctx, "gamma", command.MustCommand(TypeEcho, "anyone?")); err != nil {
		d.say("controller   send to gamma: %v", err)
	}
	if err := d.batch(ctx); err != nil {
		return err
	}
	d.say("demo         done")
	d.mu.Lock()
	d.quiet = true
	d.mu.Unlock()
	return nil
}

// batch narrates a batch for a target that has no connector yet: it is
// stored, waits, and runs in order as soon as a connector of the target
// connects.
func (d *demo) batch(ctx context.Context) error {
	b := batch.Batch{ID: "rollout-1", Key: "firmware-2.1", TargetID: "gamma"}
	for i, step := range []string{"download firmware", "verify signature", "reboot"} {
		b.Commands = append(b.Commands, batch.Command{Command: command.MustCommand(TypeEcho, fmt.Sprintf("%d. %s", i+1, step))})
	}
	stored, err := d.runner.ExecuteBatch(ctx, b)
	if err != nil {
		return fmt.Errorf("demo: execute batch: %w", err)
	}
	d.say("controller   batch %s (%d commands) stored for gamma, which has no connector: %s",
		stored.ID, len(stored.Commands), stored.Status)
	if err := d.start(ctx, "gamma-1", "gamma"); err != nil {
		return err
	}
	done, err := d.runner.AwaitBatch(ctx, stored.ID)
	if err != nil {
		return fmt.Errorf("demo: await batch: %w", err)
	}
	d.say("controller   batch %s %s, %d retries used (waiting for a channel is not a retry); each command ran once, in order",
		done.ID, done.Status, done.Retry)
	return nil
}

func (d *demo) start(ctx context.Context, id, target string) error {
	mux := command.NewMux()
	mux.RegisterFunc(TypeEcho, func(_ context.Context, c *command.Command) (*command.Reply, error) {
		d.say("%-12s <- %s %s, answering", id, c.Type, c.Payload)
		return command.Succeeded(c, c.Payload)
	})
	cfg := connector.DefaultConfig()
	cfg.ConnectorID = id
	cfg.TargetID = target
	cfg.Logger = d.log
	cfg.OnPrimary = func(primary bool, epoch uint64) {
		if primary {
			d.say("%-12s is now the PRIMARY of %s (epoch %d)", id, target, epoch)
		} else {
			d.say("%-12s is not the primary of %s (epoch %d)", id, target, epoch)
		}
		select {
		case d.told <- told{connector: id, target: target, primary: primary, epoch: epoch}:
		default:
		}
	}
	c, err := connector.New(cfg, mux, d.lis)
	if err != nil {
		return err
	}
	dc := &demoConnector{c: c, done: make(chan error, 1)}
	d.connectors[id] = dc
	go func() { dc.done <- c.Run(ctx) }()
	d.say("%-12s connecting as target %s", id, target)
	return nil
}

func (d *demo) stop(id string) {
	dc := d.connectors[id]
	if dc == nil {
		return
	}
	delete(d.connectors, id)
	_ = dc.c.Close()
	<-dc.done
}

func (d *demo) waitChannels(ctx context.Context, n int) error {
	for _, dc := range d.connectors {
		if err := dc.c.WaitConnected(ctx); err != nil {
			return err
		}
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for len(d.ctrl.Channels()) < n {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for %d channels: %w", n, ctx.Err())
		}
	}
	return nil
}

// waitRoles waits until n connectors have been told their role.
func (d *demo) waitRoles(ctx context.Context, n int) error {
	seen := map[string]bool{}
	for len(seen) < n {
		select {
		case t := <-d.told:
			seen[t.connector] = true
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for %d connectors to learn their role: %w", n, ctx.Err())
		}
	}
	return nil
}

func (d *demo) echo(ctx context.Context, target, text string) error {
	cmd := command.MustCommand(TypeEcho, text)
	d.say("controller   -> %s to %s: %q", cmd.Type, target, text)
	start := time.Now()
	reply, err := d.ctrl.Send(ctx, target, cmd)
	if err != nil {
		return fmt.Errorf("send to %s: %w", target, err)
	}
	d.say("controller   <- %s %s from %s in %s", reply.Status, reply.Payload, target, time.Since(start).Round(time.Microsecond))
	return nil
}

func drain(ch chan controller.Event) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
