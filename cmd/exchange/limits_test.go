package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/controller"
)

// The limit flags default to the packages' defaults and read their EXCHANGE_*
// variables; the command line wins.
func TestLimitFlags(t *testing.T) {
	parse := func(args ...string) limitFlags {
		t.Helper()
		var l limitFlags
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		l.register(cmd.Flags())
		if err := cmd.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := bindEnv(cmd); err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := parse()
	if diff := cmp.Diff(grpcchannel.DefaultServerLimits(), l.server()); diff != "" {
		t.Errorf("default limits (-want +got):\n%s", diff)
	}
	if l.failedHelloRate != controller.DefaultFailedHelloRate || l.failedHelloBurst != controller.DefaultFailedHelloBurst {
		t.Errorf("failed HELLO defaults = %v, %d", l.failedHelloRate, l.failedHelloBurst)
	}

	t.Setenv("EXCHANGE_MAX_HANDSHAKES_PER_SOURCE", "7")
	t.Setenv("EXCHANGE_HANDSHAKE_TIMEOUT", "2s")
	t.Setenv("EXCHANGE_MAX_CONNECTIONS", "-1")
	t.Setenv("EXCHANGE_FAILED_HELLO_BURST", "4")
	t.Setenv("EXCHANGE_MAX_STREAMS_PER_CONNECTION", "8")
	t.Setenv("EXCHANGE_HANDSHAKE_QUEUE_WAIT", "4s")
	l = parse("--max-streams-per-connection=4", "--max-queued-handshakes=100")
	want := grpcchannel.DefaultServerLimits()
	want.MaxHandshakesPerSource = 7
	want.HandshakeTimeout = 2 * time.Second
	want.MaxConnections = -1
	want.MaxConcurrentStreams = 4 // the flag wins over EXCHANGE_MAX_STREAMS_PER_CONNECTION
	want.HandshakeQueueWait = 4 * time.Second
	want.MaxQueuedHandshakes = 100
	if diff := cmp.Diff(want, l.server()); diff != "" {
		t.Errorf("limits from the environment (-want +got):\n%s", diff)
	}
	if l.failedHelloBurst != 4 {
		t.Errorf("failedHelloBurst = %d, want 4", l.failedHelloBurst)
	}
}

// The WebSocket server takes the same limit flags, counted apart; negative
// values (off) become 0 (off).
func TestWSLimits(t *testing.T) {
	var l limitFlags
	cmd := &cobra.Command{Use: "x"}
	l.register(cmd.Flags())
	if err := cmd.Flags().Parse([]string{"--max-connections=-1", "--max-handshakes-per-source=3", "--handshake-timeout=-1s"}); err != nil {
		t.Fatal(err)
	}
	d := grpcchannel.DefaultServerLimits()
	got := wsConfig(l)
	if got.MaxConnections != 0 || got.MaxConnectionsPerSource != d.MaxConnectionsPerSource || got.MaxHandshakes != d.MaxHandshakes ||
		got.MaxHandshakesPerSource != 3 || got.HandshakeTimeout != 0 {
		t.Errorf("wsConfig() = %+v", got)
	}
}
