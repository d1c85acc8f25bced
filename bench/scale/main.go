// Command scale measures one controller process holding N real gRPC
// connectors spread over several client processes, on loopback (issue 8,
// docs/benchmarks.md "Scale").
//
// It builds the exchange binary from the main module and starts ONE
// `exchange controller` (in memory, or with -disk a data directory), with
// limits sized for the run. It then re-executes itself as -clients client
// processes (environment EXCHANGE_SCALE_ROLE=client), each running its share
// of connector.Connector instances, either one gRPC connection each or
// (-shared) sharing a few connections per process (one grpcchannel.Dialer
// opens one stream per connector over its single ClientConn). All connectors
// start at once. It measures, and merges into -results:
//
//   - register_s, primary_s: from the start until every channel is registered
//     (the controller's exchange_channels) and every connector has its first
//     PRIMARY notice (role and epoch);
//   - kib_per_connector, goroutines_per_connector: controller VmRSS and
//     go_goroutines over its idle baseline, once no notice is pending and
//     -settle has passed;
//   - idle_cpu_pct: the controller's utime+stime over -idle, as % of a core;
//   - health_sweep_s: exchange_health_sweep_seconds at full size;
//   - targets_first_page_ms, channels_first_page_ms, metrics_scrape_ms: GET
//     /exchange/targets and /exchange/channels (first pages) and /metrics;
//   - send_per_s: ECHO commands through POST /exchange/targets/:id/commands
//     from -workers concurrent HTTP clients over random targets;
//   - storm_immediate_*, storm_outage_*: kill -9 of the controller, restarted
//     at once or after -outage: the time from its /readyz until every
//     connector is connected again, and the busiest second of reconnections.
//
// The client processes run with GOGC=200 (-client-gogc): each stands in for
// thousands of devices that would each have a CPU of their own, and their
// garbage collector, scanning the stacks of all of them, is what competes
// most with the controller for the machine's 2 cores. The controller keeps
// Go's defaults.
//
// With -client-profiles DIR every client process saves a CPU profile of each
// phase in DIR, from the start (or the kill) until every connector is back:
// <label>-client-<i>-start.cpu.pprof, -storm-immediate, -storm-outage: what
// the simulated fleet, our connector library, spends. (The older
// EXCHANGE_SCALE_CLIENT_PROFILE=DIR in the environment saves the first 20 s
// after the start as client-<first connector>.cpu.pprof.)
//
// Usage (from bench/):
//
//	go run ./scale -sizes 10000,19000 -shared-sizes 100000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/exchangekit/exchange/bench/results"
)

func main() {
	if os.Getenv(roleEnv) == "client" {
		os.Exit(clientMain(os.Stdin, os.Stdout))
	}
	os.Exit(cliMain(os.Args[1:]))
}

// config is the command line.
type config struct {
	sizes, sharedSizes []int
	clients            int
	perTarget          int
	connsPerClient     int
	disk               bool
	settle, idle       time.Duration
	healthInterval     time.Duration
	sendFor            time.Duration
	workers            int
	outage, stable     time.Duration
	storms             bool
	wait               time.Duration
	bin                string
	results            string
	profiles           string
	clientProfiles     string
	startProfile       time.Duration
	controllerFlags    string
	clientGOGC         int
	noThrottle         bool
	dir                string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	sizes := fs.String("sizes", "10000,19000", "connector counts with a gRPC connection each (comma-separated; empty: none)")
	shared := fs.String("shared-sizes", "100000", "connector counts sharing connections (comma-separated; empty: none)")
	fs.IntVar(&c.clients, "clients", 4, "client processes")
	fs.IntVar(&c.perTarget, "per-target", 2, "connectors per target")
	fs.IntVar(&c.connsPerClient, "conns-per-client", 4, "gRPC connections per client process with -shared-sizes")
	fs.BoolVar(&c.disk, "disk", false, "run the controller on a data directory (raft) instead of --in-memory")
	fs.DurationVar(&c.settle, "settle", 10*time.Second, "quiet time after the start before memory is read")
	fs.DurationVar(&c.idle, "idle", 30*time.Second, "window over which idle CPU is measured")
	fs.DurationVar(&c.healthInterval, "health-interval", 30*time.Second, "the controller's --health-interval")
	fs.DurationVar(&c.sendFor, "send-for", 10*time.Second, "duration of the send phase")
	fs.IntVar(&c.workers, "workers", 64, "concurrent HTTP clients in the send phase")
	fs.DurationVar(&c.outage, "outage", 5*time.Second, "controller down time in the second storm")
	fs.DurationVar(&c.stable, "stable", 31*time.Second, "wait between the storms (the connectors' StableAfter is 30 s)")
	fs.BoolVar(&c.storms, "storms", true, "measure the reconnect storms")
	fs.DurationVar(&c.wait, "wait", 4*time.Minute, "bound on each wait for the fleet (start, reconnections)")
	fs.StringVar(&c.bin, "exchange", "", "the exchange binary (default: built from the main module)")
	fs.StringVar(&c.results, "results", "results/latest.json", "results file to merge into")
	fs.StringVar(&c.profiles, "profiles", "", "directory for the controller's pprof profiles (start, idle, pages, send CPU; heap; goroutines)")
	fs.StringVar(&c.clientProfiles, "client-profiles", "", "directory for the client processes' CPU profiles, one per client and phase: <label>-client-<i>-<start|storm-immediate|storm-outage>.cpu.pprof, each from the phase's start (the broadcast start, the kill) until the fleet is all back")
	fs.DurationVar(&c.startProfile, "start-profile", 20*time.Second, "length of the CPU profile taken from the start (with -profiles)")
	fs.StringVar(&c.controllerFlags, "controller-flags", "", "more flags for the controller, space-separated (they override the tool's: --max-handshakes 20000)")
	fs.IntVar(&c.clientGOGC, "client-gogc", 200, "GOGC of the client processes (the simulated fleet; the controller keeps the default); 0: the environment's")
	fs.BoolVar(&c.noThrottle, "no-throttle", false, "turn off the client Dialers' adaptive throttling (grpcchannel.WithoutThrottle, decision 0049), to compare")
	fs.StringVar(&c.dir, "dir", "", "directory for logs (default: a temporary one, removed unless the run fails)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var err error
	if c.sizes, err = parseSizes(*sizes); err != nil {
		return c, err
	}
	if c.sharedSizes, err = parseSizes(*shared); err != nil {
		return c, err
	}
	if c.clients < 1 || c.clients > 200 {
		return c, fmt.Errorf("-clients %d: from 1 to 200", c.clients)
	}
	return c, nil
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		f = strings.ReplaceAll(strings.ReplaceAll(f, "_", ""), "k", "000")
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("size %q: a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func cliMain(args []string) int {
	c, err := parseFlags(args)
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := measureAll(ctx, c, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		return 1
	}
	return 0
}

// measureAll runs every size and merges the results.
func measureAll(ctx context.Context, c config, out, log io.Writer) error {
	dir := c.dir
	keep := dir != ""
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "exchange-scale-"); err != nil {
			return err
		}
	}
	failed := true
	defer func() {
		if !keep && !failed {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintln(log, "scale: logs in", dir)
		}
	}()
	bin := c.bin
	if bin == "" {
		var err error
		if bin, err = buildExchange(ctx, dir); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if c.clientProfiles != "" {
		// The clients write there: make it absolute.
		abs, err := filepath.Abs(c.clientProfiles)
		if err != nil {
			return err
		}
		c.clientProfiles = abs
	}
	for _, d := range []string{c.profiles, c.clientProfiles} {
		if d != "" {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
	}
	var all []results.Result
	runOne := func(n int, shared bool) error {
		o := options{
			Bin: bin, Self: self, N: n, Clients: c.clients, PerTarget: c.perTarget,
			Shared: shared, ConnsPerClient: c.connsPerClient, Disk: c.disk,
			Settle: c.settle, Idle: c.idle, HealthInterval: c.healthInterval,
			SendFor: c.sendFor, Workers: c.workers, Outage: c.outage, Stable: c.stable,
			Storms: c.storms, Wait: c.wait, Profiles: c.profiles, ClientProfiles: c.clientProfiles, StartProfile: c.startProfile, ExtraFlags: strings.Fields(c.controllerFlags), ClientGOGC: c.clientGOGC, NoThrottle: c.noThrottle, Log: log,
		}
		o.Dir = filepath.Join(dir, o.label())
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return err
		}
		rs, err := run(ctx, o)
		all = append(all, rs...)
		if len(rs) > 0 {
			if _, merr := results.Merge(c.results, rs); merr != nil && err == nil {
				err = merr
			}
		}
		return err
	}
	for _, n := range c.sizes {
		if err := runOne(n, false); err != nil {
			return fmt.Errorf("%d connectors: %w", n, err)
		}
	}
	for _, n := range c.sharedSizes {
		if err := runOne(n, true); err != nil {
			return fmt.Errorf("%d shared streams: %w", n, err)
		}
	}
	failed = false
	return results.WriteMarkdown(out, all)
}
