package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/bench/results"
)

// options size and shape one run.
type options struct {
	Bin       string // the exchange binary
	Self      string // this binary, re-executed as the clients
	SelfArgs  []string
	Dir       string // logs and the controller's data directory
	N         int    // connectors
	Clients   int    // client processes
	PerTarget int    // connectors per target
	// Shared: the connectors of a client share ConnsPerClient gRPC
	// connections; otherwise each has its own.
	Shared         bool
	ConnsPerClient int
	Disk           bool // a data directory (raft) instead of --in-memory

	Settle         time.Duration // quiet time before memory is read
	Idle           time.Duration // idle CPU window
	HealthInterval time.Duration
	SendFor        time.Duration
	Workers        int
	Outage         time.Duration // controller down time of the second storm
	Stable         time.Duration // wait between the storms (the connectors' StableAfter)
	Storms         bool
	Wait           time.Duration // bound on every wait for the fleet
	Profiles       string        // directory for pprof profiles; "" for none
	ClientProfiles string        // directory for the clients' per-phase CPU profiles; "" for none
	StartProfile   time.Duration // length of the CPU profile from the start
	ExtraFlags     []string      // more controller flags, after the tool's
	ClientGOGC     int           // GOGC of the client processes; 0: the environment's
	NoThrottle     bool          // the clients' Dialers without adaptive throttling
	Log            io.Writer     // progress
}

// label names the run in result names: "conn-19000" or "shared-100000".
func (o options) label() string {
	if o.Shared {
		return fmt.Sprintf("shared-%d", o.N)
	}
	return fmt.Sprintf("conn-%d", o.N)
}

func (o options) targets() int { return (o.N + o.PerTarget - 1) / o.PerTarget }

// controllerArgs are the controller's flags, sized for the run.
func (o options) controllerArgs(grpcAddr, httpAddr, raftAddr, token string) []string {
	maxConns := 1000
	if !o.Shared {
		// One fd per connection: as many as the fd limit (20,000 here)
		// leaves room for, and no more than needed.
		maxConns = min(o.N+1000, 19900)
	}
	args := []string{"controller",
		"--node-id", "scale",
		"--grpc-addr", grpcAddr,
		"--http-addr", httpAddr,
		"--management-token", token,
		"--max-connections", strconv.Itoa(maxConns),
		// Every connection comes from a handful of loopback addresses: the
		// per-source limits, meant for a fleet spread over many hosts, are
		// lifted.
		"--max-connections-per-source", "-1",
		"--max-handshakes-per-source", "-1",
		"--max-channels", strconv.Itoa(max(2*o.N, 100_000)),
		"--health-interval", o.HealthInterval.String(),
		"--log-level", "warn",
	}
	if o.Shared {
		args = append(args, "--max-streams-per-connection", "-1")
	}
	if o.Disk {
		args = append(args, "--data-dir", filepath.Join(o.Dir, "data"), "--raft-addr", raftAddr)
	} else {
		args = append(args, "--in-memory")
	}
	return append(args, o.ExtraFlags...)
}

func (o options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "%s scale %s: %s\n", time.Now().Format("15:04:05.000"), o.label(), fmt.Sprintf(format, args...))
	}
}

// run measures one size: see the package documentation.
func run(ctx context.Context, o options) (_ []results.Result, err error) {
	o.logf("starting (load %s); controller flags %v; client Dialers' throttle %v", loadAvg(), o.controllerArgs("G", "H", "R", "T")[1:], !o.NoThrottle)
	grpcAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	raftAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	token := "scale-" + strconv.FormatUint(rand.Uint64(), 36)
	args := o.controllerArgs(grpcAddr, httpAddr, raftAddr, token)
	ctrlLog := filepath.Join(o.Dir, "controller.log")
	startCtrl := func() (*ctrlProc, error) {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		return startController(sctx, o.Bin, args, ctrlLog, httpAddr, token)
	}
	ctrl, err := startCtrl()
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := ctrl.stop(30 * time.Second); serr != nil && err == nil {
			err = fmt.Errorf("stop controller: %w", serr)
		}
	}()

	m := &measure{o: o, label: o.label()}
	if err := sleep(ctx, 2*time.Second); err != nil {
		return nil, err
	}
	rss0, err := rssKiB(ctrl.pid())
	if err != nil {
		return nil, err
	}
	met0, _, err := ctrl.metrics(ctx)
	if err != nil {
		return nil, err
	}
	g0 := met0["go_goroutines"]
	o.logf("controller idle: %d KiB, %.0f goroutines", rss0, g0)

	// The clients, each with its share of the connectors.
	var fl fleet
	defer func() { fl.stop(time.Minute) }()
	per := o.N / o.Clients
	for i := range o.Clients {
		n := per
		if i == o.Clients-1 {
			n = o.N - per*(o.Clients-1)
		}
		cfg := clientConfig{Addr: grpcAddr, First: i * per, Count: n, PerTarget: o.PerTarget, SourceIP: fmt.Sprintf("127.0.0.%d", 10+i), NoThrottle: o.NoThrottle}
		if o.Shared {
			cfg.Conns = o.ConnsPerClient
		}
		c, err := startClient(o.Self, o.SelfArgs, o.ClientGOGC, cfg, filepath.Join(o.Dir, fmt.Sprintf("client-%d.log", i)))
		if err != nil {
			return nil, err
		}
		fl = append(fl, c)
	}
	rctx, cancel := context.WithTimeout(ctx, o.Wait)
	err = fl.awaitReady(rctx)
	cancel()
	if err != nil {
		return nil, err
	}

	// The simultaneous start, profiled.
	var profs sync.WaitGroup
	defer profs.Wait()
	cpuProfile := func(name string, d time.Duration) {
		if o.Profiles == "" {
			return
		}
		profs.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
			defer cancel()
			path := filepath.Join(o.Profiles, fmt.Sprintf("%s-%s.cpu.pprof", o.label(), name))
			if err := ctrl.profile(pctx, fmt.Sprintf("profile?seconds=%d", max(1, int(d.Seconds()))), path); err != nil {
				o.logf("profile %s: %v", name, err)
			}
		})
	}
	cpuProfile("start", o.StartProfile)
	m.clientProfile(fl, "start")
	t0 := time.Now()
	fl.broadcast("start")
	err = m.start(ctx, ctrl, fl, t0)
	m.clientProfileStop(fl)
	if err != nil {
		return nil, err
	}

	// Memory and goroutines, once quiet.
	if err := m.settle(ctx, ctrl); err != nil {
		return nil, err
	}
	rss1, err := rssKiB(ctrl.pid())
	if err != nil {
		return nil, err
	}
	met1, _, err := ctrl.metrics(ctx)
	if err != nil {
		return nil, err
	}
	m.memory(rss0, rss1, g0, met0, met1, fl.total())
	if o.Profiles != "" {
		for _, p := range []string{"heap", "goroutine"} {
			if err := ctrl.profile(ctx, p, filepath.Join(o.Profiles, fmt.Sprintf("%s-%s.pprof", o.label(), p))); err != nil {
				o.logf("profile %s: %v", p, err)
			}
		}
	}

	// Idle CPU and the health sweep (after the start's profile: one CPU
	// profile at a time).
	profs.Wait()
	cpuProfile("idle", o.Idle)
	if err := m.idle(ctx, ctrl); err != nil {
		return nil, err
	}
	profs.Wait()

	// Management: the first page of the targets, the scrape.
	if err := m.management(ctx, ctrl); err != nil {
		return nil, err
	}
	if o.Profiles != "" {
		// What a page costs: a profile while the first page of the
		// targets is fetched over and over.
		cpuProfile("pages", pageProfile)
		err := m.pages(ctx, ctrl, pageProfile)
		profs.Wait()
		if err != nil {
			return nil, err
		}
	}

	// Sends spread over every target.
	cpuProfile("send", o.SendFor)
	m.send(ctx, ctrl)
	profs.Wait()

	if o.Storms {
		ctrl, err = m.storm(ctx, ctrl, fl, "immediate", 0, startCtrl)
		if err != nil {
			return m.rs, err
		}
		// Let the connectors' failure counts reset (StableAfter) so that
		// the second storm starts from the same backoff.
		if err := sleep(ctx, o.Stable); err != nil {
			return m.rs, err
		}
		ctrl, err = m.storm(ctx, ctrl, fl, "outage", o.Outage, startCtrl)
		if err != nil {
			return m.rs, err
		}
	}
	fails := fl.errors()
	if len(fails) > 0 {
		o.logf("failed connection attempts over the run: %v", fails)
		examples := fl.errorExamples()
		for _, k := range slices.Sorted(maps.Keys(fails)) {
			if ex, ok := examples[k]; ok {
				o.logf("  %s, the first: %s", k, ex)
			}
		}
	}
	return m.rs, nil
}

// measure collects the figures of one run.
type measure struct {
	o     options
	label string
	rs    []results.Result
}

func (m *measure) add(name, unit string, value float64, target float64, higherIsBetter bool, note string) {
	var r results.Result
	if target > 0 {
		r = results.New("scale/"+m.label+"/"+name, unit, value, "target", target, higherIsBetter)
	} else {
		r = results.Result{Name: "scale/" + m.label + "/" + name, Unit: unit, Value: value}
	}
	r.Rounds = 1
	r.Note = note
	m.rs = append(m.rs, r)
	verdict := ""
	if target > 0 {
		met := value <= target
		if higherIsBetter {
			met = value >= target
		}
		verdict = fmt.Sprintf(" (target %g: %s)", target, map[bool]string{true: "met", false: "NOT met"}[met])
	}
	m.o.logf("%s = %.4g %s%s %s", name, value, unit, verdict, note)
}

func (m *measure) startTarget() float64 {
	if m.o.N > 19_000 {
		return 60
	}
	return 30
}

// start waits until every connector is registered and told its role.
func (m *measure) start(ctx context.Context, ctrl *ctrlProc, fl fleet, t0 time.Time) error {
	o := m.o
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var regAt, connAt, toldAt, most time.Time // most: 99.9 % registered
	var maxScrape time.Duration
	var s status
	var active float64
	for regAt.IsZero() || toldAt.IsZero() {
		select {
		case <-wctx.Done():
			m.o.logf("start: not done after %v: %d connected, %d told, %.0f registered", o.Wait, s.Connected, s.Told, active)
			m.add("register_s", "s", o.Wait.Seconds(), m.startTarget(), false, fmt.Sprintf("NOT all registered within the bound: %.0f of %d (99.9 %% at %s)", active, o.N, since(most, t0)))
			m.add("primary_s", "s", o.Wait.Seconds(), m.startTarget(), false, fmt.Sprintf("NOT all told within the bound: %d of %d told, %d connected, %d believe they are primary (of %d targets)", s.Told, o.N, s.Connected, s.Primaries, o.targets()))
			return nil
		case <-tick.C:
		}
		met, took, err := ctrl.metrics(wctx)
		if err == nil {
			maxScrape = max(maxScrape, took)
			active = met[`exchange_channels{state="active"}`]
			if most.IsZero() && active >= 0.999*float64(o.N) {
				most = time.Now()
			}
			if regAt.IsZero() && int(active) >= o.N {
				regAt = time.Now()
			}
		}
		s = fl.total()
		if connAt.IsZero() && s.Connected >= o.N {
			connAt = time.Unix(0, s.LastConn)
		}
		if toldAt.IsZero() && s.Told >= o.N && s.Primaries == o.targets() {
			toldAt = time.Unix(0, s.LastTold)
		}
	}
	gogc := "GOGC " + os.Getenv("GOGC")
	if o.ClientGOGC != 0 {
		gogc = fmt.Sprintf("GOGC %d", o.ClientGOGC)
	}
	note := fmt.Sprintf("%d connectors (%d per target), %d client processes (%s), simultaneous start; last HELLO reply at %s (as the clients last reported it); the slowest /metrics scrape meanwhile %v",
		o.N, o.PerTarget, o.Clients, gogc, since(connAt, t0), maxScrape.Round(time.Millisecond))
	m.add("register_s", "s", regAt.Sub(t0).Seconds(), m.startTarget(), false, note+fmt.Sprintf("; controller-side count polled every 100 ms; 99.9 %% at %s", since(most, t0)))
	m.logTransport(ctx, ctrl, "start")
	m.add("primary_s", "s", toldAt.Sub(t0).Seconds(), m.startTarget(), false, "the last connector's first PRIMARY notice (its role and epoch), from the start")
	return nil
}

// settle waits until no PRIMARY notice is pending, then Settle.
func (m *measure) settle(ctx context.Context, ctrl *ctrlProc) error {
	wctx, cancel := context.WithTimeout(ctx, m.o.Wait)
	defer cancel()
	for {
		met, _, err := ctrl.metrics(wctx)
		if err == nil && met["exchange_primary_notices_pending"] == 0 {
			break
		}
		if err := sleep(wctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("notices still pending: %w", err)
		}
	}
	return sleep(ctx, m.o.Settle)
}

func (m *measure) memory(rss0, rss1 int64, g0 float64, met0, met1 map[string]float64, clients status) {
	n := float64(m.o.N)
	target := 32.0
	what := "connector with a connection each"
	if m.o.Shared {
		target = 12
		what = "stream over shared connections"
	}
	heap := (met1["go_memstats_heap_inuse_bytes"] - met0["go_memstats_heap_inuse_bytes"]) / 1024 / n
	stack := (met1["go_memstats_stack_inuse_bytes"] - met0["go_memstats_stack_inuse_bytes"]) / 1024 / n
	m.add("kib_per_connector", "KiB", float64(rss1-rss0)/n, target, false,
		fmt.Sprintf("controller VmRSS over its idle baseline (%d → %d KiB) per %s; Go heap in use %.1f and stacks %.1f KiB per connector; the clients held %.1f KiB per connector",
			rss0, rss1, what, heap, stack, float64(clients.RSSKiB)/n))
	m.add("goroutines_per_connector", "goroutines", (met1["go_goroutines"]-g0)/n, 0, false,
		fmt.Sprintf("go_goroutines %.0f → %.0f", g0, met1["go_goroutines"]))
}

// idle measures the controller's CPU over Idle, and the health sweep.
func (m *measure) idle(ctx context.Context, ctrl *ctrlProc) error {
	o := m.o
	met0, _, err := ctrl.metrics(ctx)
	if err != nil {
		return err
	}
	c0, err := cpuTime(ctrl.pid())
	if err != nil {
		return err
	}
	start := time.Now()
	if err := sleep(ctx, o.Idle); err != nil {
		return err
	}
	c1, err := cpuTime(ctrl.pid())
	if err != nil {
		return err
	}
	took := time.Since(start)
	pct := 100 * (c1 - c0).Seconds() / took.Seconds()
	target := 0.0
	if !o.Shared {
		target = 10
	}
	m.add("idle_cpu_pct", "% of a core", pct, target, false,
		fmt.Sprintf("controller utime+stime over %v idle (health checks every %v, gRPC keepalives), load average %s", took.Round(time.Second), o.HealthInterval, loadAvg()))

	// The sweep: the mean of those that ended since met0, waiting for one
	// if none did.
	wctx, cancel := context.WithTimeout(ctx, 2*o.HealthInterval+o.Wait)
	defer cancel()
	for {
		met1, _, err := ctrl.metrics(wctx)
		if err == nil {
			dc := met1["exchange_health_sweep_seconds_count"] - met0["exchange_health_sweep_seconds_count"]
			if dc > 0 {
				ds := met1["exchange_health_sweep_seconds_sum"] - met0["exchange_health_sweep_seconds_sum"]
				fails := 0.0
				for k, v := range met1 {
					if len(k) > 35 && k[:35] == "exchange_health_check_failures_tota" {
						fails += v
					}
				}
				m.add("health_sweep_s", "s", ds/dc, 0, false,
					fmt.Sprintf("exchange_health_sweep_seconds, mean of %.0f sweep(s) at full size; %.0f failed checks so far", dc, fails))
				return nil
			}
		}
		if err := sleep(wctx, 500*time.Millisecond); err != nil {
			m.o.logf("no health sweep ended: %v", err)
			return nil
		}
	}
}

// management times the first page of GET /exchange/targets and a /metrics
// scrape: the median of 5 each.
func (m *measure) management(ctx context.Context, ctrl *ctrlProc) error {
	var page, chPage, scrape []float64
	var pageBytes, chBytes int
	get := func(path string) (float64, int, error) {
		start := time.Now()
		code, b, err := ctrl.get(ctx, path)
		if err != nil {
			return 0, 0, err
		}
		if code != 200 {
			return 0, 0, fmt.Errorf("GET %s: status %d", path, code)
		}
		return float64(time.Since(start).Microseconds()) / 1000, len(b), nil
	}
	for range 5 {
		ms, n, err := get("/exchange/targets")
		if err != nil {
			return err
		}
		page, pageBytes = append(page, ms), n
		if ms, n, err = get("/exchange/channels"); err != nil {
			return err
		}
		chPage, chBytes = append(chPage, ms), n
		_, took, err := ctrl.metrics(ctx)
		if err != nil {
			return err
		}
		scrape = append(scrape, float64(took.Microseconds())/1000)
	}
	m.add("targets_first_page_ms", "ms", results.Median(page), 100, false,
		fmt.Sprintf("GET /exchange/targets (default page, %d bytes), median of 5 (max %.1f ms), %d targets", pageBytes, slices.Max(page), m.o.targets()))
	m.add("channels_first_page_ms", "ms", results.Median(chPage), 100, false,
		fmt.Sprintf("GET /exchange/channels (default page, %d bytes), median of 5 (max %.1f ms), %d channels", chBytes, slices.Max(chPage), m.o.N))
	m.add("metrics_scrape_ms", "ms", results.Median(scrape), 100, false,
		fmt.Sprintf("GET /metrics, median of 5 (max %.1f ms)", slices.Max(scrape)))
	return nil
}

// pageProfile is how long the pages' profile lasts (with -profiles).
const pageProfile = 5 * time.Second

// pages fetches the first page of the targets, one request after the
// other, for d.
func (m *measure) pages(ctx context.Context, ctrl *ctrlProc, d time.Duration) error {
	var took []float64
	for end := time.Now().Add(d); time.Now().Before(end); {
		start := time.Now()
		code, _, err := ctrl.get(ctx, "/exchange/targets")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("GET /exchange/targets: status %d", code)
		}
		took = append(took, float64(time.Since(start).Microseconds())/1000)
	}
	slices.Sort(took)
	m.o.logf("pages: %d first pages of the targets one after the other in %s: median %.1f ms, p90 %.1f ms, max %.1f ms",
		len(took), d, results.Median(took), took[len(took)*9/10], took[len(took)-1])
	return nil
}

// send posts ECHO commands to random targets from Workers goroutines for
// SendFor.
func (m *measure) send(ctx context.Context, ctrl *ctrlProc) {
	o := m.o
	sctx, cancel := context.WithTimeout(ctx, o.SendFor)
	defer cancel()
	var ok, failed atomic.Int64
	lat := make([][]float64, o.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range o.Workers {
		wg.Go(func() {
			body := `{"type":"ECHO","payload":{"hello":"scale"},"timeoutMs":10000}`
			for sctx.Err() == nil {
				t := rand.IntN(o.targets())
				at := time.Now()
				code, err := ctrl.post(sctx, "/exchange/targets/"+targetOf(t*o.PerTarget, o.PerTarget)+"/commands", body)
				if sctx.Err() != nil {
					return
				}
				if err != nil || code != 200 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				lat[w] = append(lat[w], float64(time.Since(at).Microseconds())/1000)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	p := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return all[int(q*float64(len(all)-1))]
	}
	m.add("send_per_s", "commands/s", float64(ok.Load())/took.Seconds(), 0, true,
		fmt.Sprintf("POST /exchange/targets/:id/commands (ECHO), %d concurrent HTTP clients over random targets of %d, %v; latency p50 %.1f ms, p99 %.1f ms; %d failed",
			o.Workers, o.targets(), took.Round(time.Second), p(0.5), p(0.99), failed.Load()))
}

// storm kills the controller with SIGKILL, restarts it after outage and
// measures the reconnections: the time from its return until every
// connector is connected again, and the peak of connections per second.
func (m *measure) storm(ctx context.Context, ctrl *ctrlProc, fl fleet, name string, outage time.Duration, startCtrl func() (*ctrlProc, error)) (*ctrlProc, error) {
	o := m.o
	mark := time.Now()
	fl.broadcast(fmt.Sprintf("mark %d", mark.UnixNano()))
	m.clientProfile(fl, "storm-"+name)
	defer m.clientProfileStop(fl)
	ctrl.kill()
	if err := sleep(ctx, outage); err != nil {
		return ctrl, err
	}
	next, err := startCtrl()
	if err != nil {
		return ctrl, fmt.Errorf("restart: %w", err)
	}
	back := time.Now() // ready
	o.logf("storm %s: controller back %v after the kill", name, back.Sub(mark).Round(time.Millisecond))
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	var allAt, most time.Time // most: 99.9 % back
	var s status
	for allAt.IsZero() {
		s = fl.total()
		if most.IsZero() && s.Mark == mark.UnixNano() && float64(s.Since) >= 0.999*float64(o.N) {
			most = time.Now()
		}
		if s.Mark == mark.UnixNano() && s.Since >= o.N {
			allAt = time.Unix(0, s.LastConn)
			break
		}
		if err := sleep(wctx, 100*time.Millisecond); err != nil {
			o.logf("storm %s: only %d of %d back after %v", name, s.Since, o.N, o.Wait)
			allAt = time.Now()
			break
		}
	}
	peak, peakAt := 0, int64(0)
	for sec, n := range fl.accepts() {
		if sec >= mark.Unix() && n > peak {
			peak, peakAt = n, sec
		}
	}
	note := fmt.Sprintf("kill -9, restart after %v (in-memory state: every connector registers again); from the controller's /readyz until the last connector's HELLO reply", outage)
	if s.Since < o.N {
		note += fmt.Sprintf("; NOT all back: %d of %d", s.Since, o.N)
	}
	note += fmt.Sprintf("; 99.9 %% back at %s", since(most, back))
	target := 0.0
	if outage > 0 {
		target = 20
	}
	m.add("storm_"+name+"_back_s", "s", allAt.Sub(back).Seconds(), target, false, note)
	m.logTransport(ctx, next, "storm "+name)
	m.add("storm_"+name+"_peak_per_s", "connections/s", float64(peak), 0, true,
		fmt.Sprintf("the busiest second of reconnections (%.0f s after the return)", float64(peakAt)-float64(back.Unix())))
	return next, nil
}

// clientProfile asks every client process for a CPU profile of the phase
// that begins (with ClientProfiles), until clientProfileStop.
func (m *measure) clientProfile(fl fleet, phase string) {
	if m.o.ClientProfiles == "" {
		return
	}
	for i, c := range fl {
		_ = c.send("profile " + filepath.Join(m.o.ClientProfiles, fmt.Sprintf("%s-client-%d-%s.cpu.pprof", m.label, i, phase)))
	}
}

func (m *measure) clientProfileStop(fl fleet) {
	if m.o.ClientProfiles != "" {
		fl.broadcast("profile-stop")
	}
}

// logTransport logs the gRPC transport's refusals before HELLO and its
// handshake queue (exchange_grpc_*) since the controller started.
func (m *measure) logTransport(ctx context.Context, ctrl *ctrlProc, phase string) {
	met, _, err := ctrl.metrics(ctx)
	if err != nil {
		m.o.logf("%s: transport metrics: %v", phase, err)
		return
	}
	r := func(reason string) float64 {
		return met[`exchange_grpc_handshake_refusals_total{reason="`+reason+`"}`]
	}
	served := met["exchange_grpc_handshake_queue_wait_seconds_count"]
	wait := 0.0
	if served > 0 {
		wait = met["exchange_grpc_handshake_queue_wait_seconds_sum"] / served
	}
	m.o.logf("%s: controller's handshake refusals: limit %.0f, queue_full %.0f, queue_timeout %.0f; served from the queue %.0f (mean wait %.2f s); connections refused %.0f, silent streams %.0f",
		phase, r("limit"), r("queue_full"), r("queue_timeout"), served, wait,
		met["exchange_grpc_connections_refused_total"], met["exchange_grpc_silent_streams_total"])
}

// since says how long after from t came, or "never" for a zero t.
func since(t, from time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%.1f s", t.Sub(from).Seconds())
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
