//go:build unix

package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// A controller started with a small file-descriptor budget (ulimit -n 400)
// derives its connection cap from it (400 − a reserve of half: 200), logs
// both once, and at that cap, with more connectors knocking, refuses the
// extra ones at once with a retry hint while /healthz, /readyz and /metrics
// keep answering and the log has no "too many open files".
func TestConnectionCapFromFDLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const nofile, wantCap = 400, 200
	cmd := exec.Command("sh", "-c", `ulimit -n `+strconv.Itoa(nofile)+` && exec "$0" "$@"`, exchangeBinary(t),
		"controller", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--log-level", "info", "--connection-timeout", "1m", "--max-connections-per-source", "-1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		lines []string
		more  = make(chan struct{}, 1)
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			select {
			case more <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("controller output:\n%s", strings.Join(lines, "\n"))
			mu.Unlock()
		}
	})
	waitFor := func(re *regexp.Regexp) []string {
		t.Helper()
		for {
			mu.Lock()
			for _, l := range lines {
				if m := re.FindStringSubmatch(l); m != nil {
					mu.Unlock()
					return m
				}
			}
			mu.Unlock()
			select {
			case <-more:
			case <-done:
				t.Fatalf("controller exited before printing %q", re)
			case <-ctx.Done():
				t.Fatalf("no line matching %q", re)
			}
		}
	}
	capLine := waitFor(regexp.MustCompile(`connection cap.* fdLimit=(\d+) maxConnections=(\d+)`))
	if capLine[1] != strconv.Itoa(nofile) || capLine[2] != strconv.Itoa(wantCap) {
		t.Fatalf("logged fdLimit=%s maxConnections=%s, want %d and %d", capLine[1], capLine[2], nofile, wantCap)
	}
	m := waitFor(listeningRe)
	grpcAddr, httpURL := m[1], m[2]

	// Fill the cap with connections that hold their descriptor, then knock
	// with 50 more (under the 64 refusals served at once).
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range wantCap + 50 {
		c, err := net.Dial("tcp", grpcAddr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// A connector over the cap is refused at once, with a retry hint.
	d, err := grpcchannel.NewDialer(grpcAddr, grpcchannel.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	start := time.Now()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	for {
		c, err := d.Dial(dctx)
		if err == nil {
			// One of the 250 raw connections may not be counted yet
			// (accepted in order): the cap is reached once the backlog is
			// drained; this connection then holds a place.
			defer c.Close()
			continue
		}
		if !errors.Is(err, channel.ErrLimitExceeded) || !strings.Contains(err.Error(), "retry after 5s") {
			t.Fatalf("Dial() at the cap = %v, want ErrLimitExceeded with \"retry after 5s\"", err)
		}
		t.Logf("Dial() at the cap = %v after %v", err, time.Since(start))
		break
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		resp := get(hctx, t, httpURL+path)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		hcancel()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s at the connection cap = %d, want 200", path, resp.StatusCode)
		}
	}
	body := getText(ctx, t, httpURL+"/metrics")
	t.Logf("metrics at the cap: %d bytes", len(body))
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "too many open files") {
			t.Errorf("the controller ran out of descriptors: %s", l)
		}
	}
}
