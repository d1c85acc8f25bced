package main

import (
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/connector"
)

// --reconnect-base and --reconnect-max default to the connector's defaults,
// read EXCHANGE_RECONNECT_*, and land in the connector's Config; an invalid
// pair is refused by the connector's validation.
func TestReconnectFlags(t *testing.T) {
	parse := func(args ...string) connector.Config {
		t.Helper()
		var r reconnectFlags
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		r.register(cmd.Flags())
		if err := cmd.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := bindEnv(cmd); err != nil {
			t.Fatal(err)
		}
		cfg := connector.DefaultConfig()
		cfg.TargetID = "t1"
		r.apply(&cfg)
		return cfg
	}
	d := connector.DefaultConfig()
	if cfg := parse(); cfg.BackoffBase != d.BackoffBase || cfg.BackoffMax != d.BackoffMax {
		t.Errorf("defaults: base %v max %v, want %v %v", cfg.BackoffBase, cfg.BackoffMax, d.BackoffBase, d.BackoffMax)
	}
	t.Setenv("EXCHANGE_RECONNECT_MAX", "30s")
	t.Setenv("EXCHANGE_RECONNECT_BASE", "1s")
	if cfg := parse("--reconnect-base=250ms"); cfg.BackoffBase != 250*time.Millisecond || cfg.BackoffMax != 30*time.Second {
		t.Errorf("from the environment and the flag: base %v max %v, want 250ms (flag) and 30s (env)", cfg.BackoffBase, cfg.BackoffMax)
	}
	if err := parse("--reconnect-base=5s", "--reconnect-max=1s").Validate(); err == nil {
		t.Error("--reconnect-max below --reconnect-base: Validate() = nil, want an error")
	}
}
