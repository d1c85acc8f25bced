package membership_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/cluster/membership"
	"github.com/exchangekit/exchange/internal/testlog"
)

const (
	defaultTestTimeout = 10 * time.Second // bound for every wait
)

// TestMain checks that no goroutine outlives the tests. Nothing is ignored,
// but memberlist's Shutdown does not wait for its goroutines: a probe in
// flight waits for its ack timer, up to ProbeInterval times the Lifeguard
// awareness multiplier (8), which can outlast goleak's own retries (about
// 2 s). So the check is retried for up to leakWait; a memberlist that was
// never shut down keeps its goroutines forever and still fails it.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := findLeaks(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakWait bounds how long the leak checks wait for memberlist's goroutines
// to notice a Shutdown (8 x a 1 s probe interval, plus slack).
const leakWait = 10 * time.Second

// findLeaks retries goleak.Find until no goroutine is left or leakWait passes.
func findLeaks() error {
	deadline := time.Now().Add(leakWait)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// leakCheck checks, after every other cleanup of t (the nodes' Close), that
// no goroutine is left.
func leakCheck(t *testing.T) {
	t.Cleanup(func() {
		if err := findLeaks(); err != nil {
			t.Error(err)
		}
	})
}

// testCtx returns a context bounded by defaultTestTimeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testLogger returns a logger writing to t.Log until the test ends.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t, slog.LevelDebug) }

// testConfig is DefaultConfig for node id on a free loopback port.
func testConfig(t testing.TB, id string, join ...string) membership.Config {
	cfg := membership.DefaultConfig()
	cfg.NodeID = id
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Meta = membership.Meta{
		RaftAddr:    "127.0.0.1:17401",
		GRPCAddr:    "127.0.0.1:17400",
		Incarnation: id + "-1",
		Version:     1,
	}
	cfg.Join = join
	cfg.Logger = testLogger(t)
	cfg.MemberlistLogLevel = slog.LevelInfo
	return cfg
}

// node is a started Membership with a watcher on its events.
type node struct {
	*membership.Membership
	*watcher
}

// start starts a Membership and closes it when the test ends.
func start(t testing.TB, cfg membership.Config) node {
	t.Helper()
	m, err := membership.Start(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Start(%s) = %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close(%s) = %v", cfg.NodeID, err)
		}
	})
	return node{Membership: m, watcher: watch(m)}
}

// cluster starts n nodes, node-1 alone and the others joining it, and waits
// until every node sees every other alive.
func cluster(t testing.TB, n int, tweak func(*membership.Config)) []node {
	t.Helper()
	var nodes []node
	for i := range n {
		var join []string
		if i > 0 {
			join = []string{nodes[0].LocalNode().Addr}
		}
		cfg := testConfig(t, fmt.Sprintf("node-%d", i+1), join...)
		if tweak != nil {
			tweak(&cfg)
		}
		nodes = append(nodes, start(t, cfg))
	}
	ctx := testCtx(t)
	for _, nd := range nodes {
		nd.waitFor(t, ctx, fmt.Sprintf("%d nodes alive", n), func(last map[string]membership.Event) bool {
			return countState(last, membership.StateAlive) == n
		})
	}
	return nodes
}

// countState counts the nodes whose last event left them in state s.
func countState(last map[string]membership.Event, s membership.State) int {
	c := 0
	for _, ev := range last {
		if ev.Member.State == s {
			c++
		}
	}
	return c
}

// watcher consumes a Membership's events (the single consumer of Events) and
// lets tests wait for conditions on them. Its goroutine ends when the
// Membership closes the channel.
type watcher struct {
	mu      sync.Mutex
	last    map[string]membership.Event // newest event per node id
	all     []membership.Event
	changed chan struct{} // closed and replaced on every event
	closed  bool
}

func watch(m *membership.Membership) *watcher {
	w := &watcher{last: make(map[string]membership.Event), changed: make(chan struct{})}
	go func() {
		for ev := range m.Events() {
			w.mu.Lock()
			w.last[ev.Member.Meta.NodeID] = ev
			w.all = append(w.all, ev)
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
		w.mu.Lock()
		w.closed = true
		close(w.changed)
		w.mu.Unlock()
	}()
	return w
}

// waitFor waits until cond holds on the newest event per node, failing the
// test when ctx ends first.
func (w *watcher) waitFor(t testing.TB, ctx context.Context, what string, cond func(last map[string]membership.Event) bool) {
	t.Helper()
	if err := w.wait(ctx, cond); err != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Fatalf("waiting for %s: %v; events: %v", what, err, w.all)
	}
}

// wait is waitFor returning an error.
func (w *watcher) wait(ctx context.Context, cond func(last map[string]membership.Event) bool) error {
	for {
		w.mu.Lock()
		ok, closed, ch := cond(w.last), w.closed, w.changed
		w.mu.Unlock()
		if ok {
			return nil
		}
		if closed {
			return membership.ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// events returns a copy of every event seen so far.
func (w *watcher) events() []membership.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]membership.Event(nil), w.all...)
}

// stateIs returns a condition: node id's newest event left it in state s.
func stateIs(id string, s membership.State) func(map[string]membership.Event) bool {
	return func(last map[string]membership.Event) bool {
		ev, ok := last[id]
		return ok && ev.Member.State == s
	}
}

// member returns id's entry in m.Members().
func member(m *membership.Membership, id string) (membership.Member, bool) {
	for _, mem := range m.Members() {
		if mem.Meta.NodeID == id {
			return mem, true
		}
	}
	return membership.Member{}, false
}
