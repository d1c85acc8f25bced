package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/controller"
)

// Failure kinds of a send during a rolling restart. Each is explained by a
// failover: the others are not.
const (
	kindNoChannel   = "no channel (during failover)"
	kindUnavailable = "node unavailable (forwarded to a node that is down)"
	kindClosed      = "channel closed (its node or connector went away)"
)

// classify names the kind of a send's failure, or "" for an unexplained one.
func classify(err error) string {
	switch {
	case errors.Is(err, controller.ErrNoChannel):
		return kindNoChannel
	case errors.Is(err, controller.ErrForwardingUnavailable):
		return kindUnavailable
	case errors.Is(err, channel.ErrClosed):
		return kindClosed
	}
	return ""
}

// TestRollingRestart restarts every node in turn, waiting for readiness,
// while two connectors stay attached (failing over) and a sender on a node
// not being restarted streams commands: every failure is counted and
// explained, and they stay few.
func TestRollingRestart(t *testing.T) {
	e := newEnv(t, 3)
	nodes := e.h.Nodes()
	var cons []*conn
	for _, home := range nodes[:2] {
		c := e.connect("t-roll", home, connOpts{})
		e.waitConnected(c)
		cons = append(cons, c)
	}

	var phase atomic.Pointer[string]
	const steady = "steady"
	phase.Store(new(steady))
	var sender atomic.Pointer[clustertest.Member]
	sender.Store(nodes[2])
	var (
		mu          sync.Mutex
		ok          int
		fails       = map[string]int{}
		unexplained []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond) // the sender's pace
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			m := sender.Load()
			ph := phase.Load()
			cn := e.ctl(m)
			if cn == nil {
				mu.Lock()
				unexplained = append(unexplained, "the sender's node "+m.ID+" is down")
				mu.Unlock()
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			cmd := echo(fmt.Sprint(i))
			r, err := cn.ctrl.Send(ctx, "t-roll", cmd)
			cancel()
			mu.Lock()
			switch {
			case err == nil && (r == nil || string(r.Payload) != string(cmd.Payload) || r.CommandID != cmd.ID):
				unexplained = append(unexplained, fmt.Sprintf("silent failure: reply %+v to %s", r, cmd))
			case err == nil:
				ok++
			default:
				k := classify(err)
				if k == "" {
					unexplained = append(unexplained, err.Error())
					k = "unexplained"
				}
				if *ph == steady { // a restart may have begun during the send
					ph = phase.Load()
				}
				fails[*ph+": "+k]++
			}
			mu.Unlock()
		}
	})

	for i, m := range nodes {
		sender.Store(nodes[(i+1)%len(nodes)])
		phase.Store(new("restart " + m.ID))
		start := time.Now()
		e.Stop(m)
		e.Restart(m)
		e.leader()
		waitFor(t, "both connectors attached again after restarting "+m.ID, func() bool { return e.settled("t-roll", cons) })
		phase.Store(new(steady))
		t.Logf("restarted %s: failover over after %v", m.ID, time.Since(start).Round(time.Millisecond))
		// A steady stretch: every send succeeds.
		mu.Lock()
		before := ok
		mu.Unlock()
		waitFor(t, "20 more sends to succeed", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return ok >= before+20
		})
	}
	close(stop)
	wg.Wait()

	total := ok
	for _, n := range fails {
		total += n
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rolling restart: %d sends, %d succeeded\n", total, ok)
	for _, k := range slices.Sorted(maps.Keys(fails)) {
		fmt.Fprintf(&b, "  %-72s %5d\n", k, fails[k])
	}
	t.Log(b.String())
	for i, u := range unexplained {
		if i == 10 {
			t.Errorf("... and %d more", len(unexplained)-10)
			break
		}
		t.Errorf("unexplained failure: %s", u)
	}
	for k, n := range fails {
		if strings.HasPrefix(k, steady) {
			t.Errorf("%d sends failed with the cluster steady (%s): failures must stay within failovers", n, k)
		}
	}
}
