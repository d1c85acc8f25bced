package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/internal/testlog"
	"github.com/exchangekit/exchange/state"
)

const (
	defaultTestTimeout = 10 * time.Second // bound for every wait
)

// TestMain checks that no goroutine outlives the tests: raft, its TCP
// transport and our future waiters must all be gone after Close. No library
// goroutine needs to be ignored.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCtx returns a context bounded by defaultTestTimeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testLogger returns a logger writing to t.Log until the test ends.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t, slog.LevelDebug) }

// testConfig is DefaultConfig on dir, a free loopback port, and short raft
// timings (a lone node becomes leader after 1-2 HeartbeatTimeouts).
func testConfig(t testing.TB, dir string) cluster.Config {
	cfg := cluster.DefaultConfig()
	cfg.NodeID = "node-1"
	cfg.DataDir = dir
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 20 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 20 * time.Millisecond
	cfg.Logger = testLogger(t)
	cfg.RaftLogLevel = slog.LevelInfo
	return cfg
}

// wait runs fn, which blocks on a raft future (raft's futures take no ctx),
// and fails the test if it does not return within defaultTestTimeout.
func wait(t testing.TB, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-testCtx(t).Done():
		t.Fatalf("raft future not answered within %v", defaultTestTimeout)
		return nil
	}
}

// open opens a node and closes it when the test ends.
func open(t testing.TB, cfg cluster.Config) *cluster.Node {
	t.Helper()
	n, err := cluster.Open(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return n
}

// closeNode closes n now (open's cleanup closes it again: Close is
// idempotent).
func closeNode(t testing.TB, n *cluster.Node) {
	t.Helper()
	if err := n.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
}

var epoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// register returns an op registering channel id of target, held by node-1.
func register(id, target string) state.Op {
	return state.Op{Register: &state.RegisterChannel{Channel: state.Channel{
		ID: id, TargetID: target, ConnectorID: "conn-" + id, NodeID: "node-1", Active: true,
		RegisteredAt: epoch, Metadata: map[string]string{"id": id},
	}}}
}

func unregister(id string) state.Op {
	return state.Op{Unregister: &state.UnregisterChannel{ChannelID: id}}
}

// replay applies ops to a fresh State, ignoring op errors, as the FSM does.
func replay(ops ...state.Op) *state.State {
	s := state.NewState()
	for _, op := range ops {
		_, _ = s.Apply(op)
	}
	return s
}

// snapshotOf copies n's state (through its snapshot encoding), so that it can
// be kept after View returns and after n closes.
func snapshotOf(t testing.TB, n *cluster.Node) *state.State {
	t.Helper()
	var b []byte
	var err error
	n.View(func(s *state.State) { b, err = s.Marshal() })
	if err != nil {
		t.Fatalf("Marshal() = %v", err)
	}
	s, err := state.Unmarshal(b)
	if err != nil {
		t.Fatalf("Unmarshal() = %v", err)
	}
	return s
}

// diffState compares two states: the registry, the primaries with their
// epochs, the sequence, and the whole persisted form (which covers the
// batches without depending on their Go representation).
func diffState(want, got *state.State) string {
	var b strings.Builder
	if d := cmp.Diff(want.Channels, got.Channels); d != "" {
		fmt.Fprintf(&b, "Channels (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want.Primaries, got.Primaries); d != "" {
		fmt.Fprintf(&b, "Primaries (-want +got):\n%s", d)
	}
	if want.Seq != got.Seq {
		fmt.Fprintf(&b, "Seq = %d, want %d\n", got.Seq, want.Seq)
	}
	wb, werr := want.Marshal()
	gb, gerr := got.Marshal()
	if werr != nil || gerr != nil {
		fmt.Fprintf(&b, "Marshal() = %v, %v\n", werr, gerr)
	} else if !bytes.Equal(wb, gb) {
		fmt.Fprintf(&b, "persisted form differs:\nwant %s\n got %s\n", wb, gb)
	}
	return b.String()
}

// recorder collects the events a subscriber receives, one slice per call.
type recorder struct {
	mu    sync.Mutex
	calls [][]state.Event
}

func (r *recorder) record(evs []state.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, append([]state.Event(nil), evs...))
}

func (r *recorder) get() [][]state.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]state.Event(nil), r.calls...)
}
