package controller

import (
	"fmt"
	"slices"
	"testing"

	"github.com/exchangekit/exchange/state"
)

// TestPrimaryDirtyTake: take returns what was recorded since the last take,
// sorted, exactly once; the slices it returns are reused by the next take
// (the notifier is done with them by then), up to dirtyKeep, and a burst
// past that is let go rather than kept for the process's life.
func TestPrimaryDirtyTake(t *testing.T) {
	var d primaryDirty
	d.record("n1", []state.Event{
		{Kind: state.ChannelRegistered, NodeID: "n1", ChannelID: "c2"},
		{Kind: state.ChannelRegistered, NodeID: "n2", ChannelID: "other-node"},
		{Kind: state.PrimaryElected, TargetID: "t2"},
		{Kind: state.PrimaryElected, TargetID: "t1"},
	})
	d.markChannel("c1")
	targets, channels, all := d.take()
	if want := []string{"t1", "t2"}; !slices.Equal(targets, want) {
		t.Errorf("targets = %q, want %q", targets, want)
	}
	if want := []string{"c1", "c2"}; !slices.Equal(channels, want) {
		t.Errorf("channels = %q, want %q", channels, want)
	}
	if all {
		t.Error("all = true without a StateRestored event")
	}

	targets, channels, all = d.take()
	if len(targets) != 0 || len(channels) != 0 || all {
		t.Errorf("second take = %q, %q, %t; want nothing: it was taken", targets, channels, all)
	}

	d.record("n1", []state.Event{{Kind: state.StateRestored}, {Kind: state.ChannelUnregistered, NodeID: "n1", ChannelID: "c3"}})
	_, channels, all = d.take()
	if !all || !slices.Equal(channels, []string{"c3"}) {
		t.Errorf("after a restore: channels %q, all %t; want [c3], true", channels, all)
	}
	reused := &d.taken[1][:1][0]

	d.markChannel("c4")
	if _, channels, _ = d.take(); !slices.Equal(channels, []string{"c4"}) || &channels[0] != reused {
		t.Errorf("channels = %q (reused: %t), want [c4] in the last take's slice", channels, &channels[0] == reused)
	}

	for i := range dirtyKeep + 1 {
		d.markChannel(fmt.Sprintf("c%05d", i))
	}
	if _, channels, _ = d.take(); len(channels) != dirtyKeep+1 || !slices.IsSorted(channels) {
		t.Fatalf("a burst: %d channels (sorted: %t), want %d sorted", len(channels), slices.IsSorted(channels), dirtyKeep+1)
	}
	if d.channels != nil {
		t.Errorf("the burst's map (%d keys cleared) is kept; want it let go", len(d.channels))
	}
	d.markChannel("c5")
	if _, channels, _ = d.take(); !slices.Equal(channels, []string{"c5"}) || cap(channels) > dirtyKeep {
		t.Errorf("after the burst: %q with cap %d; want [c5] in a slice of at most %d", channels, cap(channels), dirtyKeep)
	}
}
