package membership_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/cluster/membership"
)

func TestConfigValidate(t *testing.T) {
	ok := func() membership.Config {
		c := membership.DefaultConfig()
		c.NodeID = "n1"
		return c
	}
	tests := []struct {
		name string
		edit func(*membership.Config)
		want error // nil: valid
	}{
		{"default", func(*membership.Config) {}, nil},
		{"port 0", func(c *membership.Config) { c.BindAddr = "127.0.0.1:0" }, nil},
		{"key 32", func(c *membership.Config) { c.SecretKey = make([]byte, 32) }, nil},
		{"no node id", func(c *membership.Config) { c.NodeID = "" }, membership.ErrInvalidConfig},
		{"meta of another node", func(c *membership.Config) { c.Meta.NodeID = "n2" }, membership.ErrInvalidConfig},
		{"meta too large", func(c *membership.Config) { c.Meta.GRPCAddr = strings.Repeat("x", 500) }, membership.ErrMetaTooLarge},
		{"key 10 bytes", func(c *membership.Config) { c.SecretKey = make([]byte, 10) }, membership.ErrInvalidConfig},
		{"bad bind", func(c *membership.Config) { c.BindAddr = "localhost" }, membership.ErrInvalidConfig},
		{"advertise host name", func(c *membership.Config) { c.AdvertiseAddr = "example.com:7402" }, membership.ErrInvalidConfig},
		{"bad join", func(c *membership.Config) { c.Join = []string{"nohost"} }, membership.ErrInvalidConfig},
		{"profile", func(c *membership.Config) { c.Profile = "fast" }, membership.ErrInvalidConfig},
		{"probe timeout", func(c *membership.Config) { c.Timings.ProbeTimeout = time.Second }, membership.ErrInvalidConfig},
		{"negative", func(c *membership.Config) { c.Timings.SuspicionMult = -1 }, membership.ErrInvalidConfig},
		{"leave timeout", func(c *membership.Config) { c.LeaveTimeout = 0 }, membership.ErrInvalidConfig},
		{"negative reconnect interval", func(c *membership.Config) { c.ReconnectInterval = -time.Second }, membership.ErrInvalidConfig},
		{"no reconnect", func(c *membership.Config) { c.ReconnectInterval = 0 }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok()
			tt.edit(&c)
			err := c.Validate()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestStartRefusesOversizedMeta(t *testing.T) {
	leakCheck(t)
	cfg := testConfig(t, "n1")
	cfg.Meta.Incarnation = strings.Repeat("i", membership.MetaMaxSize)
	if _, err := membership.Start(testCtx(t), cfg); !errors.Is(err, membership.ErrMetaTooLarge) {
		t.Fatalf("Start() = %v, want ErrMetaTooLarge", err)
	}
}

func TestLoneNode(t *testing.T) {
	leakCheck(t)
	cfg := testConfig(t, "solo")
	n := start(t, cfg)
	local := n.LocalNode()
	if local.State != membership.StateAlive || strings.HasSuffix(local.Addr, ":0") || !strings.HasPrefix(local.Addr, "127.0.0.1:") {
		t.Errorf("LocalNode() = %+v, want alive on a bound loopback port", local)
	}
	want := cfg.Meta
	want.NodeID = "solo"
	if diff := cmp.Diff(want, local.Meta); diff != "" {
		t.Errorf("LocalNode().Meta (-want +got):\n%s", diff)
	}
	n.waitFor(t, testCtx(t), "own join", stateIs("solo", membership.StateAlive))
	if evs := n.events(); evs[0].Type != membership.EventJoin || evs[0].Member.Meta.NodeID != "solo" {
		t.Errorf("first event = %+v, want own join", evs[0])
	}
	if got := n.Members(); len(got) != 1 || got[0].Meta.NodeID != "solo" {
		t.Errorf("Members() = %+v, want only solo", got)
	}
}

func TestJoin(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", size), func(t *testing.T) {
			leakCheck(t)
			nodes := cluster(t, size, nil)
			for _, nd := range nodes {
				got := nd.Members()
				if len(got) != size {
					t.Fatalf("%s: Members() = %+v, want %d", nd.LocalNode().Meta.NodeID, got, size)
				}
				for i, mem := range got {
					id := fmt.Sprintf("node-%d", i+1)
					want := membership.Member{
						Meta: membership.Meta{NodeID: id, RaftAddr: "127.0.0.1:17401", GRPCAddr: "127.0.0.1:17400",
							Incarnation: id + "-1", Version: 1},
						Addr:  nodes[i].LocalNode().Addr,
						State: membership.StateAlive,
					}
					if diff := cmp.Diff(want, mem); diff != "" {
						t.Errorf("%s sees %s (-want +got):\n%s", nd.LocalNode().Meta.NodeID, id, diff)
					}
				}
			}
		})
	}
}

// TestMembersWhileNodesChange: Members may be called at any time, while
// memberlist updates a node's meta in place (run with -race: Members once
// read memberlist's *Node fields outside its lock).
func TestMembersWhileNodesChange(t *testing.T) {
	leakCheck(t)
	nodes := cluster(t, 2, nil)
	ctx := testCtx(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, m := range nodes[0].Members() {
				_ = m.Meta.GRPCAddr + m.Addr
			}
		}
	}()
	meta := nodes[1].LocalNode().Meta
	meta.NodeID = ""
	for i := range 20 {
		meta.GRPCAddr = fmt.Sprintf("10.0.0.2:%d", 7400+i)
		if err := nodes[1].UpdateMeta(ctx, meta); err != nil {
			t.Fatalf("UpdateMeta() = %v", err)
		}
	}
	nodes[0].waitFor(t, ctx, "node-2's last meta", func(last map[string]membership.Event) bool {
		return last["node-2"].Member.Meta.GRPCAddr == "10.0.0.2:7419"
	})
	close(stop)
	<-done
	if m, _ := member(nodes[0].Membership, "node-2"); m.Meta.GRPCAddr != "10.0.0.2:7419" {
		t.Errorf("Members() entry = %+v, want the last GRPCAddr", m)
	}
}

func TestUpdateMeta(t *testing.T) {
	leakCheck(t)
	nodes := cluster(t, 3, nil)
	ctx := testCtx(t)
	meta := nodes[1].LocalNode().Meta
	meta.NodeID = "" // filled in
	meta.GRPCAddr = "10.0.0.2:7400"
	meta.Version = 2
	if err := nodes[1].UpdateMeta(ctx, meta); err != nil {
		t.Fatalf("UpdateMeta() = %v", err)
	}
	for _, nd := range nodes {
		nd.waitFor(t, ctx, "node-2's new meta", func(last map[string]membership.Event) bool {
			ev := last["node-2"]
			return ev.Member.Meta.GRPCAddr == "10.0.0.2:7400" && ev.Member.Meta.Version == 2
		})
		if m, _ := member(nd.Membership, "node-2"); m.Meta.GRPCAddr != "10.0.0.2:7400" || m.State != membership.StateAlive {
			t.Errorf("Members() entry = %+v, want the new GRPCAddr, alive", m)
		}
	}
	if ev := nodes[0].events(); ev[len(ev)-1].Type != membership.EventUpdate {
		t.Errorf("last event = %+v, want an update", ev[len(ev)-1])
	}

	meta.NodeID = "node-9"
	if err := nodes[1].UpdateMeta(ctx, meta); err == nil {
		t.Errorf("UpdateMeta(another node's id) = nil, want an error")
	}
	meta.NodeID = ""
	meta.Incarnation = strings.Repeat("i", membership.MetaMaxSize)
	if err := nodes[1].UpdateMeta(ctx, meta); !errors.Is(err, membership.ErrMetaTooLarge) {
		t.Errorf("UpdateMeta(oversized) = %v, want ErrMetaTooLarge", err)
	}
}

func TestLeaveIsNotFailure(t *testing.T) {
	leakCheck(t)
	nodes := cluster(t, 3, nil)
	ctx := testCtx(t)
	began := time.Now()
	if err := nodes[2].Leave(ctx); err != nil {
		t.Fatalf("Leave() = %v", err)
	}
	t.Logf("Leave took %v", time.Since(began))
	if err := nodes[2].Leave(ctx); err != nil {
		t.Errorf("second Leave() = %v, want nil", err)
	}
	if err := nodes[2].UpdateMeta(ctx, membership.Meta{}); !errors.Is(err, membership.ErrLeft) {
		t.Errorf("UpdateMeta after Leave = %v, want ErrLeft", err)
	}
	if err := nodes[2].Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for _, nd := range nodes[:2] {
		nd.waitFor(t, ctx, "node-3 left", stateIs("node-3", membership.StateLeft))
		if m, ok := member(nd.Membership, "node-3"); !ok || m.State != membership.StateLeft {
			t.Errorf("Members() entry for node-3 = %+v, %v; want left", m, ok)
		}
		for _, ev := range nd.events() {
			if ev.Type == membership.EventFail {
				t.Errorf("event %+v: a node that left must not be seen as failed", ev)
			}
		}
	}
}

func TestFailureDetected(t *testing.T) {
	leakCheck(t)
	nodes := cluster(t, 3, nil)
	stopped := time.Now()
	if err := nodes[2].Close(); err != nil { // no Leave: a crash, as far as the others know
		t.Fatalf("Close() = %v", err)
	}
	// DefaultConfig detects a dead node of a 3-node cluster in about 1 s
	// (docs/benchmarks.md); 5 s leaves room for -race on a loaded machine.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, nd := range nodes[:2] {
		nd.waitFor(t, ctx, "node-3 dead", stateIs("node-3", membership.StateDead))
	}
	t.Logf("dead detected by both in %v", time.Since(stopped))
	for _, nd := range nodes[:2] {
		last := nd.events()[len(nd.events())-1]
		if last.Type != membership.EventFail || last.Member.Meta.NodeID != "node-3" {
			t.Errorf("last event = %+v, want node-3 fail", last)
		}
		if m, _ := member(nd.Membership, "node-3"); m.State != membership.StateDead {
			t.Errorf("Members() entry for node-3 = %+v, want dead", m)
		}
	}
}

func TestRejoinAfterFailure(t *testing.T) {
	leakCheck(t)
	nodes := cluster(t, 3, func(c *membership.Config) {
		// Let node-3 come back at a new address as soon as it is dead.
		c.Timings.DeadNodeReclaimTime = time.Millisecond
	})
	ctx := testCtx(t)
	join := []string{nodes[0].LocalNode().Addr}

	restart := func(t *testing.T, bind, incarnation string) {
		addr := nodes[2].LocalNode().Addr
		if err := nodes[2].Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		for _, nd := range nodes[:2] {
			nd.waitFor(t, ctx, "node-3 dead", stateIs("node-3", membership.StateDead))
		}
		cfg := testConfig(t, "node-3", join...)
		cfg.BindAddr = bind
		if bind == "" {
			cfg.BindAddr = addr
		}
		cfg.Meta.Incarnation = incarnation
		nodes[2] = start(t, cfg)
		for _, nd := range nodes {
			nd.waitFor(t, ctx, "node-3 back, 3 nodes alive", func(last map[string]membership.Event) bool {
				ev := last["node-3"]
				return ev.Type == membership.EventJoin && ev.Member.Meta.Incarnation == incarnation &&
					countState(last, membership.StateAlive) == 3
			})
		}
	}
	t.Run("same address", func(t *testing.T) { restart(t, "", "node-3-2") })
	t.Run("new address", func(t *testing.T) { restart(t, "127.0.0.1:0", "node-3-3") })
}

func TestNodeIDConflict(t *testing.T) {
	leakCheck(t)
	a := start(t, testConfig(t, "same"))
	cfg := testConfig(t, "same", a.LocalNode().Addr)
	_, err := membership.Start(testCtx(t), cfg)
	if !errors.Is(err, membership.ErrNodeIDConflict) {
		t.Fatalf("Start(duplicate id) = %v, want ErrNodeIDConflict", err)
	}
	if !strings.Contains(err.Error(), a.LocalNode().Addr) {
		t.Errorf("error %q does not name the node that has the id (%s)", err, a.LocalNode().Addr)
	}
	if got := a.Members(); len(got) != 1 || got[0].Addr != a.LocalNode().Addr {
		t.Errorf("Members() = %+v, want only the first node", got)
	}
}

func TestEncryption(t *testing.T) {
	leakCheck(t)
	key1 := []byte("0123456789abcdef")
	key2 := []byte("fedcba9876543210")
	nodes := cluster(t, 2, func(c *membership.Config) { c.SecretKey = key1 })
	join := []string{nodes[0].LocalNode().Addr}

	for name, key := range map[string][]byte{"other key": key2, "no key": nil} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, "intruder", join...)
			cfg.SecretKey = key
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			_, err := membership.Start(ctx, cfg)
			if !errors.Is(err, membership.ErrJoin) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Start() = %v, want ErrJoin and DeadlineExceeded", err)
			}
		})
	}
	for _, nd := range nodes {
		if got := len(nd.Members()); got != 2 {
			t.Errorf("Members() has %d nodes, want 2", got)
		}
	}
}

func TestJoinRetriesUntilPeerStarts(t *testing.T) {
	leakCheck(t)
	// Find a free port by starting a node and stopping it.
	first := start(t, testConfig(t, "node-1"))
	addr := first.LocalNode().Addr
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	ctx := testCtx(t)
	type result struct {
		m   *membership.Membership
		err error
	}
	res := make(chan result, 1)
	go func() {
		m, err := membership.Start(ctx, testConfig(t, "node-2", addr))
		res <- result{m, err}
	}()
	// node-2 is retrying; node-1 comes up where it looks.
	cfg := testConfig(t, "node-1")
	cfg.BindAddr = addr
	n1 := start(t, cfg)
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatalf("Start(node-2) = %v", r.err)
		}
		t.Cleanup(func() { _ = r.m.Close() })
	case <-ctx.Done():
		t.Fatal("Start(node-2) did not return")
	}
	n1.waitFor(t, ctx, "node-2 alive", stateIs("node-2", membership.StateAlive))
}

// TestJoinInBackground: with JoinInBackground, Start returns at once though
// no peer answers (a node of a cluster restarting first after a full stop),
// joins once a peer comes up, and Close stops a join still retrying.
func TestJoinInBackground(t *testing.T) {
	leakCheck(t)
	first := start(t, testConfig(t, "node-1"))
	addr := first.LocalNode().Addr
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	cfg := testConfig(t, "node-2", addr)
	cfg.JoinInBackground = true
	m, err := membership.Start(ctx, cfg) // a ctx far too short for a join
	if err != nil {
		t.Fatalf("Start(node-2) = %v, want it to return before joining", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	n2 := node{Membership: m, watcher: watch(m)}

	cfg = testConfig(t, "node-1")
	cfg.BindAddr = addr
	n1 := start(t, cfg)
	wctx := testCtx(t)
	n1.waitFor(t, wctx, "node-2 alive on node-1", stateIs("node-2", membership.StateAlive))
	n2.waitFor(t, wctx, "node-1 alive on node-2", stateIs("node-1", membership.StateAlive))

	// A background join that never succeeds ends with Close.
	gone := testConfig(t, "node-3", "127.0.0.1:1")
	gone.JoinInBackground = true
	m3, err := membership.Start(wctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if err := m3.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestJoinGivesUpWithCtx(t *testing.T) {
	leakCheck(t)
	gone := start(t, testConfig(t, "gone"))
	addr := gone.LocalNode().Addr
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := membership.Start(ctx, testConfig(t, "n2", addr))
	if !errors.Is(err, membership.ErrJoin) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start() = %v, want ErrJoin and DeadlineExceeded", err)
	}
}

func TestClosed(t *testing.T) {
	leakCheck(t)
	n := start(t, testConfig(t, "n1"))
	if err := n.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	ctx := testCtx(t)
	if err := n.Leave(ctx); !errors.Is(err, membership.ErrClosed) {
		t.Errorf("Leave() = %v, want ErrClosed", err)
	}
	if err := n.UpdateMeta(ctx, membership.Meta{}); !errors.Is(err, membership.ErrClosed) {
		t.Errorf("UpdateMeta() = %v, want ErrClosed", err)
	}
	if _, ok := <-n.Events(); ok {
		// The watcher drains the channel; it must be closed.
		for range n.Events() {
		}
	}
}

// A consumer that does not read Events holds up neither memberlist nor the
// other nodes; when it reads, it gets each node's latest state, one event per
// node.
func TestUnreadEventsDoNotBlock(t *testing.T) {
	leakCheck(t)
	ctx := testCtx(t)
	idle, err := membership.Start(ctx, testConfig(t, "idle"))
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	defer func() {
		if err := idle.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	}()
	join := []string{idle.LocalNode().Addr}
	a := start(t, testConfig(t, "a", join...))
	b := start(t, testConfig(t, "b", join...))
	meta := b.LocalNode().Meta
	for i := range 5 { // updates pile up on the idle node
		meta.Version = 10 + i
		if err := b.UpdateMeta(ctx, meta); err != nil {
			t.Fatalf("UpdateMeta() = %v", err)
		}
	}
	a.waitFor(t, ctx, "b's last update", func(last map[string]membership.Event) bool {
		return last["b"].Member.Meta.Version == 14 && countState(last, membership.StateAlive) == 3
	})
	if got := len(idle.Members()); got != 3 {
		t.Errorf("idle node's Members() has %d nodes, want 3", got)
	}

	// The dispatcher holds at most one event; the queue one per node.
	seen := map[string]membership.Event{}
	for len(seen) < 3 || seen["b"].Member.Meta.Version != 14 {
		select {
		case ev := <-idle.Events():
			seen[ev.Member.Meta.NodeID] = ev
		case <-ctx.Done():
			t.Fatalf("events seen: %v", seen)
		}
	}
	if idle.Coalesced() == 0 {
		t.Errorf("Coalesced() = 0, want the piled-up updates coalesced")
	}
	if ev := seen["b"]; ev.Type != membership.EventJoin && ev.Type != membership.EventUpdate {
		t.Errorf("b's event = %+v, want its join or update carrying Version 14", ev)
	}
}
