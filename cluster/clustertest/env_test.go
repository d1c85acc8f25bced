package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// TestMain checks that no goroutine outlives the tests. memberlist's
// Shutdown does not wait for its goroutines (a probe in flight waits for its
// ack timer), so the check is retried for a while, as in cluster/membership.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := goleak.Find()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
				code = 1
				break
			}
			time.Sleep(50 * time.Millisecond) // a poll between retries of the leak check, not a synchronisation
		}
	}
	os.Exit(code)
}

// connectorToken is the token the test connectors present in HELLO.
const connectorToken = "connector-token"

// waitTimeout bounds every wait of these tests.
const waitTimeout = 20 * time.Second

// waitFor polls cond every few milliseconds until it holds; it fails the
// test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !poll(waitTimeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
	}
}

// poll polls cond every few milliseconds until it holds or d passes.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
}

// tWriter sends logs to t (shown on failure or with -v) until the test ends.
type tWriter struct {
	t    testing.TB
	done *atomic.Bool
}

func (w tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// crashable is the controller's view of a node that can crash: once dead,
// Apply fails at once, so that a Stop is a crash (the controller does not
// get to unregister its channels on its way down; the leader must remove
// them when memberlist declares the node dead).
type crashable struct {
	*cluster.Node
	dead atomic.Bool
}

func (c *crashable) Apply(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	if c.dead.Load() {
		return nil, cluster.ErrClosed
	}
	return c.Node.Apply(ctx, ops...)
}

// ctrlNode is the controller side of one running member: a controller over
// the member's gRPC server and a batch runner that runs while the node
// leads, wired as cmd/exchange wires them.
type ctrlNode struct {
	m      *clustertest.Member
	clu    *crashable
	ctrl   *controller.Controller
	runner *batch.Runner
	rec    *resultLog
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// env is a controller-level cluster: a clustertest.Harness with a controller
// and a batch runner on every node, and connectors that dial the nodes.
type env struct {
	t   testing.TB
	h   *clustertest.Harness
	log *slog.Logger
	// connLog is the connectors' logger: errors only (a connector warns at
	// every failed dial, which these tests cause on purpose).
	connLog *slog.Logger
	rec     *resultLog
	mu      sync.Mutex
	ctls    map[string]*ctrlNode // member id → running controller
	cons    []*conn
}

// newEnv starts n nodes with a controller and a batch runner on each.
func newEnv(t testing.TB, n int) *env {
	t.Helper()
	done := new(atomic.Bool)
	log := slog.New(slog.NewTextHandler(tWriter{t, done}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	connLog := slog.New(slog.NewTextHandler(tWriter{t, done}, &slog.HandlerOptions{Level: slog.LevelError}))
	e := &env{t: t, log: log, connLog: connLog, ctls: map[string]*ctrlNode{}, rec: &resultLog{ok: map[string]int{}}}
	e.h = clustertest.NewHarness(t, n, nil)
	t.Cleanup(func() {
		e.closeConnectors()
		for _, m := range e.h.Nodes() {
			e.stopCtrl(m)
		}
		e.h.Close()
		done.Store(true)
	})
	for _, m := range e.h.Nodes() {
		e.startCtrl(m)
	}
	return e
}

func (e *env) startCtrl(m *clustertest.Member) {
	e.t.Helper()
	node := m.Node()
	if node == nil {
		e.t.Fatalf("%s is not running", m.ID)
	}
	clu := &crashable{Node: node}
	cfg := controller.DefaultConfig()
	cfg.Logger = e.log
	cfg.HealthInterval = 2 * time.Second
	cfg.HealthTimeout = time.Second
	cfg.GoodByeTimeout = time.Second
	cfg.Authenticator = controller.StaticTokens(connectorToken)
	ctrl, err := controller.New(cfg, m.Server(), clu)
	if err != nil {
		e.t.Fatal(err)
	}
	bcfg := batch.DefaultConfig()
	bcfg.Logger = e.log
	bcfg.BackoffBase = 50 * time.Millisecond
	bcfg.BackoffMax = 500 * time.Millisecond
	bcfg.CommandTimeout = 10 * time.Second
	store := &recordingStore{BatchStore: state.NewBatchStore(clu), log: e.rec}
	runner, err := batch.NewRunner(bcfg, ctrl, store)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cn := &ctrlNode{m: m, clu: clu, ctrl: ctrl, runner: runner, rec: e.rec, cancel: cancel}
	cn.wg.Go(func() { _ = ctrl.Run(ctx) })
	cn.wg.Go(func() {
		_ = clu.WhileLeader(ctx, func(term context.Context) {
			if err := runner.Run(term); err != nil && !errors.Is(err, batch.ErrClosed) {
				e.log.Error("batch runner stopped", "node", m.ID, "err", err)
			}
		})
	})
	e.mu.Lock()
	e.ctls[m.ID] = cn
	e.mu.Unlock()
}

// stopCtrl stops the controller of m, as a crash: the node's Applies fail
// from now on; the caller stops the node.
func (e *env) stopCtrl(m *clustertest.Member) {
	e.mu.Lock()
	cn := e.ctls[m.ID]
	delete(e.ctls, m.ID)
	e.mu.Unlock()
	if cn == nil {
		return
	}
	cn.clu.dead.Store(true)
	e.h.Stop(m) // the gRPC server first (every stream breaks), then the node
	_ = cn.ctrl.Close()
	_ = cn.runner.Close()
	cn.cancel()
	cn.wg.Wait()
}

// Stop crashes member m: no GOOD_BYE, no unregistration, no raft leave.
func (e *env) Stop(m *clustertest.Member) { e.stopCtrl(m) }

// Restart starts a stopped member again, with a new controller and runner.
func (e *env) Restart(m *clustertest.Member) {
	e.t.Helper()
	e.h.Restart(m)
	e.startCtrl(m)
}

// ctl returns the running controller node of m (nil when stopped).
func (e *env) ctl(m *clustertest.Member) *ctrlNode {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ctls[m.ID]
}

// member returns the member with id.
func (e *env) member(id string) *clustertest.Member {
	for _, m := range e.h.Nodes() {
		if m.ID == id {
			return m
		}
	}
	e.t.Fatalf("no member %s", id)
	return nil
}

// leader returns the agreed leader; followers the other running members.
func (e *env) leader() *clustertest.Member      { return e.h.Leader() }
func (e *env) followers() []*clustertest.Member { return e.h.Followers() }

// primaryOf reads the primary of target in m's replica.
func (e *env) primaryOf(m *clustertest.Member, target string) (string, uint64) {
	n := m.Node()
	if n == nil {
		return "", 0
	}
	var ch string
	var ep uint64
	n.View(func(s *state.State) { ch, ep = s.PrimaryOf(target) })
	return ch, ep
}

// channelsOf lists the active channel ids of target in m's replica.
func (e *env) channelsOf(m *clustertest.Member, target string) []string {
	n := m.Node()
	if n == nil {
		return nil
	}
	var out []string
	n.View(func(s *state.State) {
		for _, c := range s.TargetChannels(target) {
			if c.Active {
				out = append(out, c.ID)
			}
		}
	})
	return out
}

// conn is a connector run by the test.
type conn struct {
	name    string
	c       *connector.Connector
	dialers []*grpcchannel.Dialer
	cancel  context.CancelFunc
	done    chan struct{}

	mu       sync.Mutex
	primary  []primaryCall // every OnPrimary call, in order
	onChange chan struct{} // closed and replaced on every OnPrimary call
}

// primaryCall is one OnPrimary callback.
type primaryCall struct {
	Primary bool
	Epoch   uint64
	At      time.Time
}

// connOpts configures a connector of the test.
type connOpts struct {
	mux  *command.Mux
	cfg  func(*connector.Config)
	only bool // dial the home node only (no failover)
	// tap, if set, sees every command the connector receives, before any
	// deduplication.
	tap func(*command.Command)
}

// tapDialer wraps a Dialer so that a test sees every command received.
type tapDialer struct {
	channel.Dialer
	tap func(*command.Command)
}

func (d tapDialer) Dial(ctx context.Context) (channel.Conn, error) {
	c, err := d.Dialer.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return tapConn{c, d.tap}, nil
}

type tapConn struct {
	channel.Conn
	tap func(*command.Command)
}

func (c tapConn) Recv() (*channel.Frame, error) {
	f, err := c.Conn.Recv()
	if err == nil && f.Command != nil {
		c.tap(f.Command)
	}
	return f, err
}

// connect starts a connector of target whose first endpoint is home (the
// others follow, for failover, unless o.only).
func (e *env) connect(target string, home *clustertest.Member, o connOpts) *conn {
	e.t.Helper()
	eps := []*clustertest.Member{home}
	if !o.only {
		for _, m := range e.h.Nodes() {
			if m != home {
				eps = append(eps, m)
			}
		}
	}
	cn := &conn{name: target + "@" + home.ID, done: make(chan struct{}), onChange: make(chan struct{})}
	var dialers []channel.Dialer
	for _, m := range eps {
		d, err := grpcchannel.NewDialer(m.GRPCAddr(), grpcchannel.WithInsecure())
		if err != nil {
			e.t.Fatal(err)
		}
		cn.dialers = append(cn.dialers, d)
		if o.tap != nil {
			dialers = append(dialers, tapDialer{d, o.tap})
		} else {
			dialers = append(dialers, d)
		}
	}
	cfg := connector.DefaultConfig()
	cfg.TargetID = target
	cfg.Token = connectorToken
	cfg.BackoffBase = 20 * time.Millisecond
	cfg.BackoffMax = 200 * time.Millisecond
	cfg.HelloTimeout = 2 * time.Second
	cfg.Logger = e.connLog.With("connector", cn.name)
	cfg.OnPrimary = func(p bool, epoch uint64) {
		cn.mu.Lock()
		cn.primary = append(cn.primary, primaryCall{p, epoch, time.Now()})
		close(cn.onChange)
		cn.onChange = make(chan struct{})
		cn.mu.Unlock()
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	mux := o.mux
	if mux == nil {
		mux = echoMux()
	}
	c, err := connector.New(cfg, mux, dialers...)
	if err != nil {
		e.t.Fatal(err)
	}
	cn.c = c
	ctx, cancel := context.WithCancel(context.Background())
	cn.cancel = cancel
	go func() {
		defer close(cn.done)
		_ = c.Run(ctx)
	}()
	e.mu.Lock()
	e.cons = append(e.cons, cn)
	e.mu.Unlock()
	return cn
}

// close stops the connector and waits for it.
func (c *conn) close() {
	c.cancel()
	<-c.done
	for _, d := range c.dialers {
		_ = d.Close()
	}
}

// calls returns the OnPrimary calls so far.
func (c *conn) calls() []primaryCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]primaryCall(nil), c.primary...)
}

func (e *env) closeConnectors() {
	e.mu.Lock()
	cons := e.cons
	e.cons = nil
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cons {
		wg.Go(c.close)
	}
	wg.Wait()
}

// waitConnected waits until c has a channel registered in every running
// replica.
func (e *env) waitConnected(c *conn) string {
	e.t.Helper()
	var id string
	waitFor(e.t, c.name+" registered everywhere", func() bool {
		id = c.c.ChannelID()
		if id == "" {
			return false
		}
		for _, m := range e.h.Nodes() {
			if m.Node() != nil && !contains(e.channelsOf(m, c.c.TargetID()), id) {
				return false
			}
		}
		return true
	})
	return id
}

// waitPrimary waits until every running replica names ch the primary of
// target, and returns its epoch.
func (e *env) waitPrimary(target, ch string) uint64 {
	e.t.Helper()
	var ep uint64
	waitFor(e.t, fmt.Sprintf("channel %s primary of %s everywhere", ch, target), func() bool {
		for _, m := range e.h.Nodes() {
			if m.Node() == nil {
				continue
			}
			p, epoch := e.primaryOf(m, target)
			if p != ch {
				return false
			}
			ep = epoch
		}
		return true
	})
	return ep
}

// settled reports whether the failovers of target are over: every running
// replica lists exactly the current channels of cons (nothing stale, no
// node stopped).
func (e *env) settled(target string, cons []*conn) bool {
	var want []string
	for _, c := range cons {
		id := c.c.ChannelID()
		if id == "" {
			return false
		}
		want = append(want, id)
	}
	slices.Sort(want)
	for _, m := range e.h.Nodes() {
		n := m.Node()
		if n == nil {
			return false
		}
		var got []string
		n.View(func(s *state.State) {
			for _, c := range s.TargetChannels(target) {
				got = append(got, c.ID)
			}
		})
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return false
		}
	}
	return true
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Command types the test connectors answer.
const (
	typeEcho  command.Type = "ECHO"  // replies with its payload
	typeFail  command.Type = "FAIL"  // the handler returns an error
	typeBlock command.Type = "BLOCK" // blocks until its ctx ends
)

// echoMux answers ECHO, FAIL and BLOCK.
func echoMux() *command.Mux {
	mux := command.NewMux()
	addEcho(mux)
	return mux
}

func addEcho(mux *command.Mux) {
	mux.RegisterFunc(typeEcho, func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded, Payload: cmd.Payload}, nil
	})
	mux.RegisterFunc(typeFail, func(context.Context, *command.Command) (*command.Reply, error) {
		return nil, errors.New("the handler failed on purpose")
	})
	mux.RegisterFunc(typeBlock, func(ctx context.Context, _ *command.Command) (*command.Reply, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

// echo builds an ECHO command carrying payload (JSON).
func echo(payload string) *command.Command {
	return &command.Command{ID: command.NewID(), Type: typeEcho, Payload: []byte(`"` + payload + `"`)}
}

// resultLog records, across every runner of an env, the command results
// whose Apply was acknowledged: a command may be acknowledged SUCCEEDED once.
type resultLog struct {
	mu sync.Mutex
	ok map[string]int // command id → acknowledged SUCCEEDED results
}

func (l *resultLog) succeeded(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok[id]
}

// recordingStore is the runner's store, recording acknowledged results.
type recordingStore struct {
	*state.BatchStore
	log *resultLog
}

func (s *recordingStore) Apply(ctx context.Context, ops ...batch.Op) error {
	err := s.BatchStore.Apply(ctx, ops...)
	if err == nil {
		s.log.mu.Lock()
		for _, op := range ops {
			if r := op.Result; r != nil && r.Status == batch.StatusSucceeded {
				s.log.ok[r.CommandID]++
			}
		}
		s.log.mu.Unlock()
	}
	return err
}
