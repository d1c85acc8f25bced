package controller_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// checkingStore checks the registry invariants after every Apply: a target's
// primary is a registered, active channel of that target, and epochs never
// go backwards.
type checkingStore struct {
	*standalone.Cluster
	mu     sync.Mutex
	epochs map[string]uint64
	errs   []string
}

func (s *checkingStore) Apply(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	rs, err := s.Cluster.Apply(ctx, ops...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Cluster.View(func(st *state.State) {
		for target, p := range st.Primaries {
			if p.Epoch < s.epochs[target] {
				s.errs = append(s.errs, fmt.Sprintf("target %s: epoch went from %d to %d", target, s.epochs[target], p.Epoch))
			}
			s.epochs[target] = p.Epoch
			if p.ChannelID == "" {
				continue
			}
			if c, ok := st.Channels[p.ChannelID]; !ok || c.TargetID != target || !c.Active {
				s.errs = append(s.errs, fmt.Sprintf("target %s: primary %s is not one of its active channels", target, p.ChannelID))
			}
		}
	})
	return rs, err
}

// Exactly one primary per target while 20 channels of 3 targets register and
// drop concurrently; once things settle, exactly one live connector of each
// target believes it is primary, at the state's epoch, and the others know
// they are not.
func TestOnePrimaryPerTargetUnderChurn(t *testing.T) {
	store := &checkingStore{Cluster: standalone.New("node-a"), epochs: map[string]uint64{}}
	h := newHarness(t, fastConfig(), harnessOpts{store: store})
	targets := []string{"t0", "t1", "t2"}
	const n = 20

	final := make([]*connector, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for round := range 3 {
				c, err := h.dial(t.Context(), connOpts{target: targets[i%len(targets)]})
				if err != nil {
					errs[i] = err
					return
				}
				if round == 2 {
					final[i] = c
					return
				}
				c.close()
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("connector %d: %v", i, err)
		}
	}
	for _, c := range final {
		t.Cleanup(c.close)
	}
	for i := 0; i < n; i += 2 { // half of them drop at once
		wg.Go(final[i].close)
	}
	wg.Wait()

	survivors := map[string][]*connector{}
	for i := 1; i < n; i += 2 {
		survivors[final[i].hello.TargetID] = append(survivors[final[i].hello.TargetID], final[i])
	}
	settled := func() error {
		for _, target := range targets {
			ti, ok := h.ctrl.Target(target)
			if !ok || len(ti.Channels) != len(survivors[target]) {
				return fmt.Errorf("target %s: registry not settled", target)
			}
			primaries := 0
			for _, c := range survivors[target] {
				b, ok := c.belief()
				want := command.PrimaryPayload{Primary: c.id() == ti.PrimaryID, Epoch: ti.Epoch}
				if !ok || b != want {
					return fmt.Errorf("target %s: channel %s believes %+v, want %+v", target, c.id(), b, want)
				}
				if b.Primary {
					primaries++
				}
			}
			if primaries != 1 {
				return fmt.Errorf("target %s: %d connectors believe they are primary", target, primaries)
			}
		}
		return nil
	}
	var last error
	h.waitFor("primaries to settle", func() bool { last = settled(); return last == nil })
	// Every call and handler of the churned channels, the PRIMARY notices to
	// channels that died under them included, is given back to the in-flight
	// counter (channel.Config.InFlightTotal).
	h.waitFor("nothing left in flight", func() bool { return h.ctrl.Counts().LocalInFlight == 0 })
	store.mu.Lock()
	defer store.mu.Unlock()
	for _, e := range store.errs {
		t.Error(e)
	}
}
