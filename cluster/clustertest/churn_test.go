package clustertest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/state"
)

// recorder polls every running replica and records what it says about every
// target's primary.
type recorder struct {
	e    *env
	stop chan struct{}
	done chan struct{}

	mu  sync.Mutex
	obs []obs
	// runs numbers the incarnations of the nodes. Keeping every Node it has
	// seen keeps a stopped one from being freed, so a restarted node can
	// never be taken for the old one (naming runs by address could: the
	// allocator reuses a freed Node's address).
	runs map[*cluster.Node]string
}

func (e *env) record() *recorder {
	r := &recorder{e: e, stop: make(chan struct{}), done: make(chan struct{}), runs: map[*cluster.Node]string{}}
	go r.run()
	return r
}

func (r *recorder) run() {
	defer close(r.done)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		r.sample()
		select {
		case <-r.stop:
			r.sample()
			return
		case <-tick.C:
		}
	}
}

func (r *recorder) sample() {
	for _, m := range r.e.h.Nodes() {
		n := m.Node()
		if n == nil {
			continue
		}
		replica := r.replicaName(m, n)
		var got []obs
		n.View(func(s *state.State) {
			for target, p := range s.Primaries {
				got = append(got, obs{Replica: replica, Target: target, Channel: p.ChannelID, Epoch: p.Epoch})
			}
		})
		r.mu.Lock()
		r.obs = append(r.obs, got...)
		r.mu.Unlock()
	}
}

// replicaName names one incarnation of a node.
func (r *recorder) replicaName(m *clustertest.Member, n *cluster.Node) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	name, ok := r.runs[n]
	if !ok {
		name = fmt.Sprintf("%s#%d", m.ID, len(r.runs)+1)
		r.runs[n] = name
	}
	return name
}

// finish stops the recorder and returns what it recorded.
func (r *recorder) finish() []obs {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.obs
}

// callsOf returns c's OnPrimary calls as history calls.
func callsOf(c *conn) []call {
	var out []call
	for _, p := range c.calls() {
		out = append(out, call{Connector: c.name + "/" + c.c.ConnectorID(), Target: c.c.TargetID(), Primary: p.Primary, Epoch: p.Epoch})
	}
	return out
}

// TestAtMostOnePrimaryUnderChurn: with connectors starting and stopping at
// random across the nodes, and a follower crashing and coming back, no
// replica ever shows two primaries of a target at one epoch, epochs never go
// back, and no connector acts on a stale epoch. Each seed is a subtest; a
// failure names its seed.
func TestAtMostOnePrimaryUnderChurn(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { churn(t, seed, 4*time.Second) })
	}
}

func churn(t *testing.T, seed uint64, d time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	e := newEnv(t, 3)
	nodes := e.h.Nodes()
	rec := e.record()
	targets := []string{"t-a", "t-b"}
	const slots = 6
	running := make([]*conn, slots)
	var done []*conn
	var victim *clustertest.Member
	stopAt, restartAt := d/4, d*5/8

	start := time.Now()
	tick := time.NewTicker(40 * time.Millisecond) // the churn's pace (a workload cadence, not a synchronisation)
	defer tick.Stop()
	steps, crashed := 0, false
	for time.Since(start) < d {
		<-tick.C
		steps++
		switch el := time.Since(start); {
		case victim == nil && !crashed && el >= stopAt:
			fs := e.followers()
			victim = fs[rng.IntN(len(fs))]
			t.Logf("seed %d: crash %s at %v", seed, victim.ID, el.Round(time.Millisecond))
			e.Stop(victim)
			crashed = true
			continue
		case victim != nil && el >= restartAt:
			t.Logf("seed %d: restart %s at %v", seed, victim.ID, el.Round(time.Millisecond))
			e.Restart(victim)
			victim = nil
			continue
		}
		i := rng.IntN(slots)
		if c := running[i]; c != nil {
			c.close()
			done = append(done, c)
			running[i] = nil
			continue
		}
		home := nodes[rng.IntN(len(nodes))]
		running[i] = e.connect(targets[i%len(targets)], home, connOpts{})
	}
	if victim != nil {
		e.Restart(victim)
	}

	// Liveness: with the churn over, every target that has a connector gets
	// a primary that its connectors agree on.
	for _, target := range targets {
		var live []*conn
		for _, c := range running {
			if c != nil && c.c.TargetID() == target {
				live = append(live, c)
			}
		}
		if len(live) == 0 {
			continue
		}
		waitFor(t, "one primary of "+target+" among its live connectors", func() bool {
			n := 0
			for _, c := range live {
				if c.c.IsPrimary() {
					n++
				}
			}
			return n == 1
		})
	}
	var live []*conn
	for _, c := range running {
		if c != nil {
			live = append(live, c)
		}
	}
	for _, target := range targets {
		var cons []*conn
		for _, c := range live {
			if c.c.TargetID() == target {
				cons = append(cons, c)
			}
		}
		waitFor(t, "the registry of "+target+" to settle", func() bool { return e.settled(target, cons) })
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, c := range running {
		if c == nil {
			continue
		}
		if _, err := e.ctl(nodes[0]).ctrl.Send(ctx, c.c.TargetID(), echo("after churn")); err != nil {
			t.Fatalf("send after churn: %v", err)
		}
	}

	for _, c := range running {
		if c != nil {
			c.close()
			done = append(done, c)
		}
	}
	h := history{Obs: rec.finish()}
	for _, c := range done {
		h.Calls = append(h.Calls, callsOf(c)...)
	}
	primaries := 0
	for _, c := range h.Calls {
		if c.Primary {
			primaries++
		}
	}
	t.Logf("seed %d: %d steps, %d connectors, %d replica observations, %d OnPrimary calls (%d as primary)",
		seed, steps, len(done), len(h.Obs), len(h.Calls), primaries)
	if primaries == 0 {
		t.Fatal("no connector was ever told primary: the churn checked nothing")
	}
	for _, v := range h.check(20) {
		t.Error(v)
	}
}
