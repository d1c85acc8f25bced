//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/internal/cputime"
)

// BenchmarkIdleCPU measures what an idle fleet costs in CPU: an `exchange
// controller --in-memory` process on its defaults (health checks every 30 s,
// the gRPC keepalive defaults), and EXCHANGE_IDLE_N connectors (default
// 2,000) in this process, each with its own gRPC connection over loopback.
// Once every connector is connected and EXCHANGE_IDLE_SETTLE (default 10 s)
// has passed, it reads the CPU time of the controller (/proc/PID/stat) and of
// this process (getrusage) over EXCHANGE_IDLE_WINDOW (default 30 s, one
// health-check interval), and reports each as a percentage of one core. A
// measurement, not a timed assertion (docs/benchmarks.md, "Idle CPU and
// reconnect storm"). EXCHANGE_IDLE_ARGS adds controller flags (for example
// "--health-interval=1h" to tell the health checks' share from keepalive's);
// EXCHANGE_IDLE_PROFILE=FILE saves the controller's CPU profile over the window.
//
//	go test -run '^$' -bench IdleCPU -benchtime 1x -timeout 15m ./cmd/exchange/
func BenchmarkIdleCPU(b *testing.B) {
	n := envInt("EXCHANGE_IDLE_N", 2000)
	settle := envDuration("EXCHANGE_IDLE_SETTLE", 10*time.Second)
	window := envDuration("EXCHANGE_IDLE_WINDOW", 30*time.Second)
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()

	// Every connector comes from 127.0.0.1: no per-source caps.
	args := []string{"controller", "--in-memory", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--max-connections-per-source=-1", "--max-handshakes-per-source=-1", "--log-level=warn"}
	args = append(args, strings.Fields(os.Getenv("EXCHANGE_IDLE_ARGS"))...)
	cmd := exec.Command(benchBinary(b), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	var grpcAddr, httpURL string
	for grpcAddr == "" && sc.Scan() {
		if m := listeningRe.FindStringSubmatch(sc.Text()); m != nil {
			grpcAddr, httpURL = m[1], m[2]
		}
	}
	if grpcAddr == "" {
		b.Fatal("the controller did not print its addresses")
	}
	go func() {
		for sc.Scan() { // drain
		}
	}()

	quiet := slog.New(slog.DiscardHandler)
	var connected atomic.Int64
	allUp := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range n {
		d, err := grpcchannel.NewDialer(grpcAddr, grpcchannel.WithInsecure())
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		c, err := connector.New(connector.Config{
			TargetID: fmt.Sprintf("t-%05d", i),
			Logger:   quiet,
			OnState: func(s connector.StateChange) {
				if s.State == connector.StateConnected && connected.Add(1) == int64(n) {
					once.Do(func() { close(allUp) })
				}
			},
		}, command.NewMux(), d)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { _ = c.Run(ctx) })
	}
	up := time.NewTimer(5 * time.Minute)
	defer up.Stop()
	select {
	case <-allUp:
	case <-up.C:
		b.Fatalf("only %d of %d connectors connected within 5 minutes", connected.Load(), n)
	}
	time.Sleep(settle) // registrations, primary notices and the first keepalive timers settle
	b.ResetTimer()
	for range b.N {
		ctl0, self0 := procCPU(b, cmd.Process.Pid), cputime.Self()
		start := time.Now()
		if path := os.Getenv("EXCHANGE_IDLE_PROFILE"); path != "" {
			// The controller's CPU profile over the window, to path.
			profile(b, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", httpURL, int(window.Seconds())), path)
		}
		time.Sleep(window - time.Since(start))
		ctl, self, elapsed := procCPU(b, cmd.Process.Pid)-ctl0, cputime.Self()-self0, time.Since(start)
		ctlPct := 100 * ctl.Seconds() / elapsed.Seconds()
		selfPct := 100 * self.Seconds() / elapsed.Seconds()
		b.ReportMetric(ctlPct, "controller-cpu%")
		b.ReportMetric(selfPct, "connectors-cpu%")
		b.Logf("%d idle connectors over %v: controller %v CPU, %.2f %% of a core (%.1f %% extrapolated to 19,000); connectors %v, %.2f %%; %d reconnections",
			n, elapsed.Round(time.Millisecond), ctl.Round(time.Millisecond), ctlPct, ctlPct*19000/float64(n),
			self.Round(time.Millisecond), selfPct, connected.Load()-int64(n))
	}
	b.StopTimer()
}

// profile saves what url answers to path.
func profile(b *testing.B, url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Fatal(err)
	}
}

// benchBinary builds cmd/exchange once (exchangeBinary, for a benchmark).
func benchBinary(b *testing.B) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "exchange-bench-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = dir + "/exchange"
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return binPath
}

// procCPU is the user and system CPU time of process pid so far
// (/proc/PID/stat, fields 14 and 15, in clock ticks of 1/100 s).
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // after "pid (comm) "
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
