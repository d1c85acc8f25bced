package cluster

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// A forwarded command keeps its id, type, payload and metadata, and its
// channel, whatever characters they hold; two forwards of one command get
// distinct link ids.
func TestForwardAddressRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		ch  state.ChannelID
		cmd *command.Command
	}{
		{"c1", &command.Command{ID: "id-1", Type: "ECHO", Payload: []byte(`"x"`), Metadata: map[string]string{"k": "v"}}},
		{"a.b/c.9.", &command.Command{ID: "f1.2.xy", Type: "T"}},
		{"", &command.Command{ID: "x", Type: "T"}},
		{"é", &command.Command{ID: "..", Type: "T"}},
	} {
		lc, id := forwardCommand(tc.ch, tc.cmd)
		lc2, _ := forwardCommand(tc.ch, tc.cmd)
		if lc.ID == lc2.ID {
			t.Errorf("two forwards of %q share the link id %q", tc.cmd.ID, lc.ID)
		}
		ch, got, ok := forwardedCommand(lc)
		if !ok || ch != tc.ch || id != tc.cmd.ID {
			t.Fatalf("forwardedCommand(%q) = %q, %v, %v; want channel %q, id %q", lc.ID, ch, got, ok, tc.ch, tc.cmd.ID)
		}
		if d := cmp.Diff(tc.cmd, got); d != "" {
			t.Errorf("command changed on the way (-sent +received):\n%s", d)
		}
	}
	// Without an id, the link makes one for this forward alone, and says so
	// (FreshID) on the link and to the receiving node; a caller's id is not
	// fresh unless the caller says it is.
	for _, tc := range []struct {
		cmd       *command.Command
		wantFresh bool
	}{
		{&command.Command{Type: "T"}, true},
		{&command.Command{ID: "mine", Type: "T"}, false},
		{&command.Command{ID: "mine", Type: "T", FreshID: true}, true},
	} {
		lc, id := forwardCommand("c1", tc.cmd)
		_, got, ok := forwardedCommand(lc)
		if !ok || id == "" || got.ID != id || (tc.cmd.ID != "" && id != tc.cmd.ID) {
			t.Fatalf("forward of %+v: id %q, received %+v (ok %v)", tc.cmd, id, got, ok)
		}
		if lc.FreshID != tc.wantFresh || got.FreshID != tc.wantFresh {
			t.Errorf("forward of %+v: FreshID on the link %v, received %v; want %v", tc.cmd, lc.FreshID, got.FreshID, tc.wantFresh)
		}
	}
	for _, bad := range []string{"", "x", "f", "f1", "f1.", "f1.x.ab", "f1.5.ab", "f1.2.ab", "f1.-1.ab"} {
		if _, _, ok := forwardedCommand(&command.Command{ID: bad, Type: "T"}); ok {
			t.Errorf("forwardedCommand(%q) accepted a malformed link id", bad)
		}
	}
}
