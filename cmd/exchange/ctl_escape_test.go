package main

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/management"
	"github.com/exchangekit/exchange/state"
)

// restoredCluster is a one-node cluster whose state was restored from a
// snapshot written by an older node, one that took ids as they came.
type restoredCluster struct {
	*standalone.Cluster
	s *state.State
}

func (r restoredCluster) View(fn func(*state.State)) { fn(r.s) }

// Ids with terminal escapes, line breaks or tabs, put in the state without
// passing through HELLO (as an older node could have), are printed quoted by
// ctl's tables: they can neither forge rows nor colour the terminal.
func TestCtlEscapesIDs(t *testing.T) {
	const (
		evilTarget    = "t\x1b[31m"
		evilConnector = "gw\nc9       t9      forged"
		evilChannel   = "c1\tx\u202e"
	)
	// The snapshot of a state an older node filled, written as it wrote it.
	old := state.NewState()
	old.Channels[evilChannel] = &state.Channel{ID: evilChannel, TargetID: evilTarget, ConnectorID: evilConnector,
		NodeID: "node-1", Active: true, RegisteredAt: ctlBase, Seq: 1}
	old.Primaries[evilTarget] = &state.Primary{ChannelID: evilChannel, Epoch: 1}
	old.Seq, old.Epoch = 1, 1
	snap, err := old.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s, err := state.Unmarshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	lis := embedded.Listen()
	ctrl, err := controller.New(controller.Config{Logger: slog.New(slog.DiscardHandler)}, lis, restoredCluster{Cluster: standalone.New("node-1"), s: s})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctrl.Close() })
	srv, err := management.New(management.Config{}, ctrl, nil, nil) // no batches: one target, one row
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	tests := []struct {
		args []string
		want []string // quoted ids expected in the data row
	}{
		{[]string{"channels"}, []string{`"c1\tx\u202e"`, `"t\x1b[31m"`, `"gw\nc9       t9      forged"`}},
		{[]string{"targets"}, []string{`"t\x1b[31m"`, `"gw\nc9       t9      forged"`, `"c1\tx\u202e"`}},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			code, out, errOut := runCtl(t, append([]string{"--addr", ts.URL}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if strings.ContainsAny(out, "\x1b\t\u202e") {
				t.Errorf("output holds a raw escape, tab or bidi override:\n%q", out)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("got %d lines, want a header and one row:\n%s", len(lines), out)
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[1], w) {
					t.Errorf("row %q does not show %s", lines[1], w)
				}
			}
		})
	}
}

func TestCell(t *testing.T) {
	for in, want := range map[string]string{
		"t1":         "t1",
		"site/gw-é":  "site/gw-é",
		"with space": "with space",
		"a\nb":       `"a\nb"`,
		"\x1b[31m":   `"\x1b[31m"`,
		"a\tb":       `"a\tb"`,
		"bad\xff":    `"bad\xff"`,
		"\u202eabc":  `"\u202eabc"`,
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %s, want %s", in, got, want)
		}
	}
}
