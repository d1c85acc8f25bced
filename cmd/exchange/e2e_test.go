package main

// End-to-end tests: they build the exchange binary and drive real processes
// over loopback, as an operator would.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/exchangekit/exchange/management"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// exchangeBinary builds cmd/exchange once per test run.
func exchangeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "exchange-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "exchange")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a running exchange process whose output lines are collected.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	more  chan struct{} // signalled (non-blocking) on every new line
	done  chan struct{} // closed when the process has exited and output is drained
	err   error         // Wait's result, valid after done
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startNotify(t, make(chan struct{}, 1), name, args...)
}

// startNotify is start with a line signal that several processes may share.
func startNotify(t *testing.T, more chan struct{}, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, more: more, done: make(chan struct{})}
	p.cmd = exec.Command(exchangeBinary(t), args...)
	p.cmd.Env = append(os.Environ(), "EXCHANGE_LOG_LEVEL=warn")
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		wg.Go(func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				p.mu.Lock()
				p.lines = append(p.lines, sc.Text())
				p.mu.Unlock()
				select {
				case p.more <- struct{}{}:
				default:
				}
			}
		})
	}
	go func() {
		wg.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine waits until a line from index `from` on matches re, and returns
// the match and the index after it.
func (p *proc) waitLine(ctx context.Context, from int, re *regexp.Regexp) ([]string, int) {
	p.t.Helper()
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if m := re.FindStringSubmatch(p.lines[i]); m != nil {
				p.mu.Unlock()
				return m, i + 1
			}
		}
		from = len(p.lines)
		p.mu.Unlock()
		select {
		case <-p.more:
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before printing a line matching %q", p.name, p.err, re)
		case <-ctx.Done():
			p.t.Fatalf("%s: no line matching %q: %v", p.name, re, ctx.Err())
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(ctx context.Context) {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("%s exited with %v after SIGTERM, want a clean exit", p.name, p.err)
		}
	case <-ctx.Done():
		p.t.Fatalf("%s did not stop after SIGTERM", p.name)
	}
}

var (
	listeningRe = regexp.MustCompile(`grpc=(\S+) http=(\S+)`)
	primaryRe   = regexp.MustCompile(`^PRIMARY connector=(\S+) target=(\S+) epoch=(\d+)`)
)

// startController starts a controller on ephemeral ports and returns it with
// its gRPC and HTTP addresses.
func startController(ctx context.Context, t *testing.T, args ...string) (p *proc, grpcAddr, httpURL string) {
	t.Helper()
	args = append([]string{"controller", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--health-interval", "1s", "--health-timeout", "1s"}, args...)
	p = start(t, "controller", args...)
	m, _ := p.waitLine(ctx, 0, listeningRe)
	return p, m[1], m[2]
}

// get fetches url; the caller closes the body.
func get(ctx context.Context, t *testing.T, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

// getJSON fetches url and, on 200, decodes the JSON body into v.
func getJSON(ctx context.Context, t *testing.T, url string, v any) int {
	t.Helper()
	resp := get(ctx, t, url)
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: decode: %v", url, err)
		}
	}
	return resp.StatusCode
}

// getText fetches url and returns its body.
func getText(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	resp := get(ctx, t, url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// waitPrimary waits until a connector other than `except` prints that it is
// the primary, and fails if two of them claim it.
func waitPrimary(ctx context.Context, t *testing.T, anyLine <-chan struct{}, conns map[string]*proc, except *proc) (*proc, uint64) {
	t.Helper()
	for {
		var found *proc
		var epoch uint64
		for _, p := range conns {
			if p == except {
				continue
			}
			p.mu.Lock()
			for _, l := range p.lines {
				if m := primaryRe.FindStringSubmatch(l); m != nil {
					if found != nil && found != p {
						t.Fatalf("two primaries: %s and %s", found.name, p.name)
					}
					found = p
					epoch, _ = strconv.ParseUint(m[3], 10, 64)
				}
			}
			p.mu.Unlock()
		}
		if found != nil {
			return found, epoch
		}
		select {
		case <-anyLine:
		case <-ctx.Done():
			t.Fatal("no connector became primary")
		}
	}
}

func TestEndToEndPrimaryFailover(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	ctrl, grpcAddr, httpURL := startController(ctx, t, "--in-memory")

	anyLine := make(chan struct{}, 1) // signalled by every connector's output
	conns := map[string]*proc{}
	for _, id := range []string{"c1", "c2", "c3"} {
		conns[id] = startNotify(t, anyLine, id, "connector", "--controller", grpcAddr, "--target", "t1", "--id", id)
	}
	// Exactly one of them is told it is the primary.
	first, firstEpoch := waitPrimary(ctx, t, anyLine, conns, nil)

	// The management API agrees.
	var target struct {
		Channels []struct {
			ConnectorID string `json:"connectorId"`
			Primary     bool   `json:"primary"`
		} `json:"channels"`
	}
	poll := time.NewTicker(20 * time.Millisecond) // Eventually-style, bounded by ctx
	defer poll.Stop()
	for getJSON(ctx, t, httpURL+"/exchange/targets/t1", &target) != http.StatusOK || len(target.Channels) != 3 {
		select {
		case <-ctx.Done():
			t.Fatal("the management API never listed 3 channels")
		case <-poll.C:
		}
	}
	for _, ch := range target.Channels {
		if ch.Primary != (ch.ConnectorID == first.name) {
			t.Errorf("management API: channel of %s primary=%t, but %s is the primary", ch.ConnectorID, ch.Primary, first.name)
		}
	}

	// ctl send reaches a connector and prints the reply.
	var out, errb strings.Builder
	if code := run(ctx, []string{"ctl", "--addr", httpURL, "-o", "json", "send", "--target", "t1", "--type", "ECHO",
		"--payload", `{"hello":"world"}`}, &out, &errb); code != 0 {
		t.Fatalf("ctl send: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), `"hello": "world"`) && !strings.Contains(out.String(), `"hello":"world"`) {
		t.Errorf("ctl send output lacks the echoed payload:\n%s", out.String())
	}
	// ctl send --primary reaches the primary, and the reply says so.
	out.Reset()
	errb.Reset()
	if code := run(ctx, []string{"ctl", "--addr", httpURL, "-o", "json", "send", "--primary", "--target", "t1", "--type", "ECHO"}, &out, &errb); code != 0 {
		t.Fatalf("ctl send --primary: exit %d: %s", code, errb.String())
	}
	var reply management.Reply
	if err := json.Unmarshal([]byte(out.String()), &reply); err != nil || reply.ConnectorID != first.name || reply.ChannelID == "" || reply.NodeID == "" {
		t.Errorf("ctl send --primary: reply %+v (%v), want it answered by %s, with its channel and node", reply, err, first.name)
	}
	// ...and a target without channels is a clear error with its exit code.
	out.Reset()
	errb.Reset()
	if code := run(ctx, []string{"ctl", "--addr", httpURL, "send", "--target", "nobody", "--type", "ECHO"}, &out, &errb); code != 5 {
		t.Errorf("ctl send to a target without channel: exit %d (%s), want 5", code, errb.String())
	}

	// Probes answer, and /metrics counts what just happened.
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := getJSON(ctx, t, httpURL+path, nil); code != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", path, code)
		}
	}
	metricsText := getText(ctx, t, httpURL+"/metrics")
	for _, want := range []string{
		`exchange_commands_total{outcome="ok",type="ECHO"} 2`,
		`exchange_channels{state="active"} 3`,
		`exchange_targets 1`,
		`exchange_primaries 1`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// kill -9 the primary's process: another connector becomes primary.
	killed := time.Now()
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	second, secondEpoch := waitPrimary(ctx, t, anyLine, conns, first)
	t.Logf("kill -9 of %s: %s became primary (epoch %d → %d) within %s", first.name, second.name, firstEpoch, secondEpoch,
		time.Since(killed).Round(time.Millisecond))
	if secondEpoch <= firstEpoch {
		t.Errorf("epoch did not grow: %d → %d", firstEpoch, secondEpoch)
	}

	for _, p := range conns {
		if p != first {
			p.stop(ctx)
		}
	}
	ctrl.stop(ctx)
}
