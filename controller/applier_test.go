package controller_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/state"
)

// scriptedStore wraps a Memory: it can hold Applies that carry registrations
// at a gate, fail some Applies, and records the size of every Apply.
type scriptedStore struct {
	*standalone.Cluster
	gated   atomic.Bool
	gate    chan struct{}
	failReg atomic.Int32 // refuse every op of this many Applies that carry a registration
	// failRegWhole fails this many Applies that carry a registration as a
	// whole (no leader, say): outcome unknown, retried.
	failRegWhole atomic.Int32
	failUnreg    atomic.Int32 // fail this many Applies that carry an unregistration
	mu           sync.Mutex
	regApplies   []int // number of ops of each Apply carrying registrations
}

func (s *scriptedStore) Apply(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	var regs, unregs int
	for _, op := range ops {
		switch {
		case op.Register != nil:
			regs++
		case op.Unregister != nil:
			unregs++
		}
	}
	if regs > 0 {
		s.mu.Lock()
		s.regApplies = append(s.regApplies, regs)
		s.mu.Unlock()
		if s.gated.Load() {
			select {
			case <-s.gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if s.failRegWhole.Add(-1) >= 0 {
			return nil, errors.New("store unavailable")
		}
		if s.failReg.Add(-1) >= 0 { // the state refuses every op, applying none
			rs := make([]state.Result, len(ops))
			for i := range rs {
				rs[i].Err = &state.OpError{Code: state.CodeInternal, Message: "refused"}
			}
			return rs, nil
		}
	}
	if unregs > 0 && s.failUnreg.Add(-1) >= 0 {
		return nil, errors.New("store unavailable")
	}
	return s.Cluster.Apply(ctx, ops...)
}

func (s *scriptedStore) applies() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.regApplies...)
}

// Registrations from many connections are coalesced into few Applies.
func TestRegistrationsAreGroupCommitted(t *testing.T) {
	store := &scriptedStore{Cluster: standalone.New("node-a"), gate: make(chan struct{})}
	store.gated.Store(true)
	h := newHarness(t, fastConfig(), harnessOpts{store: store})

	const n = 10
	cs := make([]*connector, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cs[i], errs[i] = h.dial(t.Context(), connOpts{target: "t1"}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(cs[i].close)
	}
	// One Apply is held at the gate; everything else must be queued behind it.
	h.waitFor("registrations queued", func() bool {
		got := store.applies()
		return len(got) == 1 && got[0]+h.ctrl.QueuedOps() == n
	})
	first := store.applies()[0]
	close(store.gate)
	for _, c := range cs {
		h.waitRegistered(c.id(), true)
	}
	want := []int{first, n - first} // the held Apply, then everything queued behind it
	if first == n {
		want = want[:1] // all were queued before the first Apply
	}
	if got := store.applies(); !slices.Equal(got, want) {
		t.Errorf("Applies carrying registrations = %v, want %v", got, want)
	}
}

// A registration the store refuses closes the channel: the connector will
// reconnect; the registry stays clean.
func TestRegistrationFailureClosesChannel(t *testing.T) {
	store := &scriptedStore{Cluster: standalone.New("node-a")}
	store.failReg.Store(1)
	h := newHarness(t, fastConfig(), harnessOpts{store: store})
	c := h.connect(connOpts{target: "t1"})
	h.waitClosed(c)
	if n := len(h.ctrl.Channels()); n != 0 {
		t.Errorf("%d channels registered", n)
	}
	c2 := h.connect(connOpts{target: "t1"}) // the store is back
	h.waitRegistered(c2.id(), true)
}

// An Apply that fails as a whole (no leader for a moment) is retried, and the
// registration waiting on it goes through within the HELLO deadline: the
// connector never notices.
func TestRegistrationRetriedWhileNoLeader(t *testing.T) {
	store := &scriptedStore{Cluster: standalone.New("node-a")}
	store.failRegWhole.Store(3)
	h := newHarness(t, fastConfig(), harnessOpts{store: store})
	c := h.connect(connOpts{target: "t1"})
	h.waitRegistered(c.id(), true)
	if left := store.failRegWhole.Load(); left > 0 {
		t.Errorf("registration succeeded without retrying (%d failures left)", left)
	}
}

// An unregistration the store refuses is retried until it succeeds, so a
// dead channel never lingers in the registry (reference weakness 3).
func TestUnregistrationIsRetried(t *testing.T) {
	store := &scriptedStore{Cluster: standalone.New("node-a")}
	h := newHarness(t, fastConfig(), harnessOpts{store: store})
	c := h.connect(connOpts{target: "t1"})
	h.waitRegistered(c.id(), true)
	store.failUnreg.Store(3)
	c.close()
	h.waitRegistered(c.id(), false)
	if left := store.failUnreg.Load(); left > 0 {
		t.Errorf("unregistration succeeded without retrying (%d failures left)", left)
	}
}
