package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/exchangekit/exchange/bench/results"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/exchangepb"
)

// The memory pair: the controller's heap and stacks per idle connector
// against a raw gRPC server's per idle stream. Each measurement runs in a
// fresh process (this test binary again, see TestMain), so that neither
// contender starts with what the other left in the runtime's caches (stack
// spans, heap spans); the clients run in a process of their own, so that
// the figure is the server side's alone.
const (
	envIdleServer = "EXCHANGE_BENCH_IDLE_SERVER" // "exchange" or "raw": run as the measured server
	envIdleClient = "EXCHANGE_BENCH_IDLE_CLIENT" // "exchange" or "raw": run as the child
	envIdleAddr   = "EXCHANGE_BENCH_IDLE_ADDR"
	envIdleN      = "EXCHANGE_BENCH_IDLE_N"
	envIdleConns  = "EXCHANGE_BENCH_IDLE_CONNS" // 0: a connection per stream
	// envIdleStorms, in the measured server's process only: how many times a
	// whole fleet of clients connects and is killed (its connections reset)
	// before the measured one connects: the figure after reconnect storms.
	envIdleStorms = "EXCHANGE_BENCH_IDLE_STORMS"
)

// memoryPairs are the memory figures: KiB per idle connector (stream).
var memoryPairs = []struct {
	name   string
	shared bool
}{
	{"memory/idle-connection", false},
	{"memory/idle-shared-stream", true},
}

// compareMemory measures every memory pair, round after round, ours and
// the raw server one after the other (in reverse order every other round).
func compareMemory(t *testing.T, cfg compareConfig) []results.Result {
	var out []results.Result
	for _, p := range memoryPairs {
		conns := 0
		if p.shared {
			conns = cfg.conns
		}
		var ours, raw, oursG, rawG, oursH, rawH, oursS, rawS []float64
		for round := range cfg.rounds {
			kinds := []string{"exchange", "raw"}
			if round%2 == 1 {
				slices.Reverse(kinds)
			}
			for _, kind := range kinds {
				fp, err := idleFootprintFresh(t.Context(), kind, cfg.idle, conns)
				if err != nil {
					t.Fatalf("%s, round %d, %s: %v", p.name, round+1, kind, err)
				}
				if kind == "exchange" {
					ours, oursG, oursH, oursS = append(ours, fp.KiB), append(oursG, fp.Goroutines), append(oursH, fp.HeapKiB), append(oursS, fp.StackKiB)
				} else {
					raw, rawG, rawH, rawS = append(raw, fp.KiB), append(rawG, fp.Goroutines), append(rawH, fp.HeapKiB), append(rawS, fp.StackKiB)
				}
			}
			if !cfg.smoke {
				fmt.Fprintf(os.Stderr, "%s round %d of %d done\n", p.name, round+1, cfg.rounds)
			}
		}
		what := fmt.Sprintf("%d idle connectors, a TCP connection each", cfg.idle)
		if p.shared {
			what = fmt.Sprintf("%d idle connectors over %d TCP connections", cfg.idle, conns)
		}
		r := results.New(p.name, "KiB/connector", results.Median(ours), "raw gRPC server", results.Median(raw), false)
		r.Ratio = medianRatio(ours, raw, false)
		r.Rounds = cfg.rounds
		r.Note = note(fmt.Sprintf("%s; the server's heap and stacks in use after GC: heap %.1f + stacks %.1f KiB (raw %.1f + %.1f); goroutines per connector %.1f (raw %.1f)%s", what,
			results.Median(oursH), results.Median(oursS), results.Median(rawH), results.Median(rawS),
			results.Median(oursG), results.Median(rawG), ratioRange(ours, raw, false)), 1.0)
		out = append(out, r)
	}
	return out
}

// inUse is the memory a measurement counts: heap spans and goroutine
// stacks in use, after two collections.
func inUse() (heap, stacks uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse
}

// footprint is a server's memory per idle client: KiB is HeapKiB plus
// StackKiB.
type footprint struct {
	KiB, Goroutines, HeapKiB, StackKiB float64
}

// idleFootprintFresh is idleFootprint in a fresh process.
func idleFootprintFresh(ctx context.Context, kind string, n, conns int) (footprint, error) {
	ctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envIdleServer+"="+kind, envIdleN+"="+strconv.Itoa(n), envIdleConns+"="+strconv.Itoa(conns))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return footprint{}, fmt.Errorf("server process: %w:\n%s", err, stderr.String())
	}
	var fp footprint
	if _, err := fmt.Sscan(string(out), &fp.KiB, &fp.Goroutines, &fp.HeapKiB, &fp.StackKiB); err != nil {
		return footprint{}, fmt.Errorf("server process said %q: %w", out, err)
	}
	return fp, nil
}

// idleServerMain is the measured server's process: it runs idleFootprint
// and prints its two figures. It returns the exit code.
func idleServerMain(kind string) int {
	n, err1 := strconv.Atoi(os.Getenv(envIdleN))
	conns, err2 := strconv.Atoi(os.Getenv(envIdleConns))
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintf(os.Stderr, "idle server: bad environment: %v\n", err)
		return 2
	}
	if os.Getenv(envHeapProfile) != "" {
		runtime.MemProfileRate = 1 // every allocation in the profile: a per-client figure needs them all
	}
	fp, err := idleFootprint(context.Background(), kind, n, conns)
	if err != nil {
		fmt.Fprintf(os.Stderr, "idle server: %v\n", err)
		return 1
	}
	fmt.Println(fp.KiB, fp.Goroutines, fp.HeapKiB, fp.StackKiB)
	return 0
}

// idleFootprint starts a server of kind, connects n idle clients to it from a
// child process (over conns connections, or one each when conns is 0), and
// returns the server's memory and goroutines per client.
func idleFootprint(ctx context.Context, kind string, n, conns int) (fp footprint, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	g := &idleGauge{}
	ready := newCountdown(n)
	g.ready.Store(ready)
	var addr string
	var stop func()
	quiet := func(context.Context) error { return nil } // the raw server has no follow-up work
	switch kind {
	case "exchange":
		var m *idleMetrics
		addr, stop, m, err = startIdleController(g)
		quiet = m.quiet
	case "raw":
		addr, stop, err = startIdleRaw(g)
	default:
		err = fmt.Errorf("unknown server %q", kind)
	}
	if err != nil {
		return footprint{}, err
	}
	defer stop()
	beforeH, beforeS := inUse()
	beforeG := runtime.NumGoroutine()
	storms, _ := strconv.Atoi(os.Getenv(envIdleStorms))
	for round := range storms {
		if err := idleStorm(ctx, kind, addr, n, conns, g); err != nil {
			return footprint{}, fmt.Errorf("storm %d: %w", round+1, err)
		}
	}
	kill, err := connectFleet(ctx, kind, addr, n, conns, g)
	if err != nil {
		return footprint{}, err
	}
	// The clients need no goodbye: killed, their connections reset at once.
	defer kill()
	// Let the registrations' follow-up work (primary notices, events) end
	// before the snapshot: the figure is for idle clients.
	if err := quiet(ctx); err != nil {
		return footprint{}, err
	}
	select {
	case <-time.After(idleSettle):
	case <-ctx.Done():
		return footprint{}, ctx.Err()
	}
	afterH, afterS := inUse()
	afterG := runtime.NumGoroutine()
	if dir := os.Getenv(envHeapProfile); dir != "" {
		if err := writeHeapProfile(filepath.Join(dir, fmt.Sprintf("heap-%s-%d-%d.pprof", kind, n, conns))); err != nil {
			return footprint{}, err
		}
	}
	per := func(after, before uint64) float64 { return (float64(after) - float64(before)) / 1024 / float64(n) }
	fp = footprint{HeapKiB: per(afterH, beforeH), StackKiB: per(afterS, beforeS), Goroutines: float64(afterG-beforeG) / float64(n)}
	fp.KiB = fp.HeapKiB + fp.StackKiB
	return fp, nil
}

// idleGauge is what the measured server reports of its clients: the
// countdown of the fleet connecting now, and how many are connected.
type idleGauge struct {
	ready atomic.Pointer[countdown]
	live  atomic.Int64
}

func (g *idleGauge) connected() {
	g.live.Add(1)
	g.ready.Load().count()
}

func (g *idleGauge) gone() { g.live.Add(-1) }

// idleStorm connects a fleet of n clients to the server at addr, waits until
// all are connected, kills their process (their connections reset), and
// waits until the server has let every one of them go.
func idleStorm(ctx context.Context, kind, addr string, n, conns int, g *idleGauge) error {
	kill, err := connectFleet(ctx, kind, addr, n, conns, g)
	if err != nil {
		return err
	}
	kill()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for g.live.Load() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%d clients still held after their process was killed: %w", g.live.Load(), ctx.Err())
		}
	}
	return nil
}

// connectFleet starts a child process of n idle clients of kind, connecting
// to the server at addr (over conns connections, or one each when conns is
// 0), and waits until the server has counted all of them in g. kill kills the
// process (the clients' connections reset at once) and waits for it; a child
// whose parent dies sees its stdin close and exits.
func connectFleet(ctx context.Context, kind, addr string, n, conns int, g *idleGauge) (kill func(), err error) {
	ready := newCountdown(n)
	g.ready.Store(ready)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, envIdleServer+"=") || strings.HasPrefix(kv, envIdleStorms+"=")
	})
	cmd.Env = append(env, envIdleClient+"="+kind, envIdleAddr+"="+addr,
		envIdleN+"="+strconv.Itoa(n), envIdleConns+"="+strconv.Itoa(conns))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		_ = stdin.Close()
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	kill = func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = stdin.Close()
	}
	select {
	case <-ready.done:
		return kill, nil
	case werr := <-exited:
		_ = stdin.Close()
		return nil, fmt.Errorf("clients exited (%v) with %d of %d connected:\n%s", werr, n-ready.left(), n, logs.String())
	case <-ctx.Done():
		kill()
		return nil, fmt.Errorf("%d of %d clients connected: %w", n-ready.left(), n, ctx.Err())
	}
}

// countdown closes done when n events have been counted.
type countdown struct {
	n    atomic.Int64
	done chan struct{}
}

func newCountdown(n int) *countdown {
	c := &countdown{done: make(chan struct{})}
	c.n.Store(int64(n))
	return c
}

func (c *countdown) count() {
	if c.n.Add(-1) == 0 {
		close(c.done)
	}
}

func (c *countdown) left() int { return int(max(c.n.Load(), 0)) }

// startIdleController runs a controller with its gRPC server on loopback,
// counting registered channels on ready. Its limits are raised only where
// they would refuse the benchmark's clients (all from one address).
func startIdleController(g *idleGauge) (addr string, stop func(), m *idleMetrics, err error) {
	cfg := controller.DefaultConfig()
	cfg.NodeID = "bench"
	cfg.Logger = slog.New(slog.DiscardHandler)
	m = &idleMetrics{}
	cfg.Metrics = m
	cfg.OnEvent = func(ev controller.Event) {
		switch ev.Kind {
		case controller.EventChannelRegistered:
			g.connected()
		case controller.EventChannelUnregistered:
			g.gone()
		}
	}
	srv := grpcchannel.NewServer(grpcchannel.WithLimits(grpcchannel.ServerLimits{
		MaxConcurrentStreams:    1 << 20,
		MaxConnections:          -1,
		MaxConnectionsPerSource: -1,
		MaxHandshakes:           -1,
		MaxHandshakesPerSource:  -1,
	}))
	ctrl, err := controller.New(cfg, srv, standalone.New(cfg.NodeID))
	if err != nil {
		return "", nil, nil, err
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran, served := make(chan struct{}), make(chan struct{})
	go func() { defer close(ran); _ = ctrl.Run(ctx) }()
	go func() { defer close(served); _ = srv.Serve(nl) }()
	return nl.Addr().String(), func() {
		_ = ctrl.Close()
		cancel()
		<-ran
		srv.Stop()
		<-served
	}, m, nil
}

// idleMetrics is the controller's Metrics in the memory pair: it keeps only
// the count of PRIMARY notices pending, so that the snapshot waits until the
// controller has told every connector its primary (with the clients on the
// same 2 cores, notices to 2,000 connectors with a connection each could
// still be in flight at the end of idleSettle).
type idleMetrics struct {
	pending atomic.Int64
	reports atomic.Int64
}

func (*idleMetrics) Sent(command.Type, time.Duration, error)             {}
func (*idleMetrics) Handled(command.Type, time.Duration, command.Status) {}
func (*idleMetrics) HelloRejected(string)                                {}
func (*idleMetrics) HealthCheckFailed(string)                            {}
func (*idleMetrics) HealthSweep(time.Duration)                           {}

func (m *idleMetrics) PrimaryNoticesPending(n int) {
	m.pending.Store(int64(n))
	m.reports.Add(1)
}

// quiet waits until no PRIMARY notice has been pending for half a second.
func (m *idleMetrics) quiet(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var since time.Time
	for {
		switch {
		case m.pending.Load() != 0 || m.reports.Load() == 0:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= 500*time.Millisecond:
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("PRIMARY notices still pending (%d): %w", m.pending.Load(), ctx.Err())
		}
	}
}

// idleRawServer is the smallest raw gRPC server a user would write for
// request/reply: its handler answers each command inline, from the stream's
// own goroutine (no writer goroutine, no queue).
type idleRawServer struct {
	exchangepb.UnimplementedExchangeServer
	g *idleGauge
}

func (s idleRawServer) Connect(stream exchangepb.Exchange_ConnectServer) error {
	first := true
	for {
		f, err := stream.Recv()
		if err != nil {
			return nil
		}
		c := f.GetCommand()
		if err := stream.Send(&exchangepb.Frame{Kind: &exchangepb.Frame_Reply{Reply: &exchangepb.Reply{
			CommandId: c.GetId(), Type: c.GetType(), Status: exchangepb.Status_STATUS_SUCCEEDED, Payload: c.GetPayload()}}}); err != nil {
			return nil
		}
		if first {
			first = false
			s.g.connected()
			defer s.g.gone()
		}
	}
}

// startIdleRaw runs an idleRawServer on a default grpc.Server on loopback.
func startIdleRaw(g *idleGauge) (addr string, stop func(), err error) {
	gs := grpc.NewServer()
	exchangepb.RegisterExchangeServer(gs, idleRawServer{g: g})
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(nl) }()
	return nl.Addr().String(), func() { gs.Stop(); <-served }, nil
}

// idleClientMain is the child process: it connects the clients its
// environment asks for, keeps them idle until its stdin closes, then closes
// them. It returns the exit code.
func idleClientMain(kind string) int {
	n, err1 := strconv.Atoi(os.Getenv(envIdleN))
	conns, err2 := strconv.Atoi(os.Getenv(envIdleConns))
	addr := os.Getenv(envIdleAddr)
	if err := errors.Join(err1, err2); err != nil || addr == "" {
		fmt.Fprintf(os.Stderr, "idle clients: bad environment: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // the parent closes stdin when it is done measuring
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		cancel()
	}()
	var err error
	switch kind {
	case "exchange":
		err = idleConnectors(ctx, addr, n, conns)
	case "raw":
		err = idleRawStreams(ctx, addr, n, conns)
	default:
		err = fmt.Errorf("unknown client %q", kind)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "idle clients: %v\n", err)
		return 1
	}
	return 0
}

// idleConnectors runs n connectors (targets i0…) through conns Dialers (one
// each when conns is 0) until ctx ends.
func idleConnectors(ctx context.Context, addr string, n, conns int) error {
	if conns <= 0 || conns > n {
		conns = n
	}
	dialers := make([]*grpcchannel.Dialer, conns)
	for i := range dialers {
		d, err := grpcchannel.NewDialer(addr, grpcchannel.WithInsecure())
		if err != nil {
			return err
		}
		defer d.Close()
		dialers[i] = d
	}
	mux := command.NewMux()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range n {
		cfg := connector.DefaultConfig()
		cfg.TargetID = fmt.Sprintf("i%d", i)
		cfg.Logger = slog.New(slog.DiscardHandler)
		c, err := connector.New(cfg, mux, channel.Dialer(dialers[i%conns]))
		if err != nil {
			return err
		}
		wg.Go(func() { _ = c.Run(ctx) })
	}
	<-ctx.Done()
	return nil
}

// idleRawStreams opens n raw Connect streams over conns client connections
// (one each when conns is 0), makes one request on each, and keeps them open
// until ctx ends.
func idleRawStreams(ctx context.Context, addr string, n, conns int) error {
	if conns <= 0 || conns > n {
		conns = n
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ccs := make([]*grpc.ClientConn, conns)
	for i := range ccs {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		ccs[i] = cc
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64) // open streams 64 at a time
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			err := func() error {
				defer func() { <-sem }()
				st, err := exchangepb.NewExchangeClient(ccs[i%conns]).Connect(ctx)
				if err != nil {
					return err
				}
				if err := st.Send(&exchangepb.Frame{Kind: &exchangepb.Frame_Command{Command: &exchangepb.Command{
					Id: "1", Type: "ECHO", Payload: payload}}}); err != nil {
					return err
				}
				_, err = st.Recv()
				return err
			}()
			if err != nil {
				errs <- err
				cancel() // every stream ends, and the parent sees the child exit
				return
			}
			<-ctx.Done()
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// idleSettle is how long the clients are left alone before the snapshot: a
// channel's writer goroutine outlives its last write by a second (decision
// 0021), and the registrations' follow-up work (primary notices, events)
// writes to every channel, so anything shorter measures channels that were
// written to a moment ago, not idle ones.
const idleSettle = 2500 * time.Millisecond

// envHeapProfile names a directory: the memory pair then saves the server's
// heap profile (in use, after GC) there, per contender, at its snapshot.
const envHeapProfile = "EXCHANGE_BENCH_HEAP_PROFILE"

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
