package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ctrlProc is one run of the controller binary.
type ctrlProc struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, once done
	logf   *os.File
	http   string // base URL of the management API
	token  string
	client *http.Client
}

// startController starts bin with args, waits for its start line and then
// for /readyz, bounded by ctx.
func startController(ctx context.Context, bin string, args []string, logPath, httpAddr, token string) (*ctrlProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	dieWithParent(cmd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &ctrlProc{
		cmd: cmd, done: make(chan struct{}), logf: logf,
		http: "http://" + httpAddr, token: token,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}},
	}
	started := make(chan struct{})
	go func() {
		// The first line says the controller is listening; the rest is
		// copied to the log.
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if first {
				first = false
				close(started)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.err = cmd.Wait()
		close(p.done)
	}()
	select {
	case <-started:
	case <-p.done:
		p.close()
		return nil, fmt.Errorf("controller exited at start: %v (log: %s)", p.err, logPath)
	case <-ctx.Done():
		p.kill()
		return nil, fmt.Errorf("controller start: %w", ctx.Err())
	}
	if err := p.awaitReady(ctx); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

func (p *ctrlProc) pid() int { return p.cmd.Process.Pid }

// awaitReady polls /readyz until it answers 200.
func (p *ctrlProc) awaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if code, _, err := p.get(ctx, "/readyz"); err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("controller not ready: %w", ctx.Err())
		case <-p.done:
			return fmt.Errorf("controller exited: %v", p.err)
		case <-t.C:
		}
	}
}

// get fetches path from the management API with the token.
func (p *ctrlProc) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.http+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// post sends body to path.
func (p *ctrlProc) post(ctx context.Context, path, body string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.http+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// metrics scrapes /metrics into "name{labels}" → value (the text format's
// sample lines as they are), and says how long the scrape took.
func (p *ctrlProc) metrics(ctx context.Context) (map[string]float64, time.Duration, error) {
	start := time.Now()
	code, b, err := p.get(ctx, "/metrics")
	took := time.Since(start)
	if err != nil {
		return nil, took, err
	}
	if code != http.StatusOK {
		return nil, took, fmt.Errorf("/metrics: status %d", code)
	}
	m := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, took, nil
}

// profile saves /debug/pprof/<what> to path.
func (p *ctrlProc) profile(ctx context.Context, what, path string) error {
	code, b, err := p.get(ctx, "/debug/pprof/"+what)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("pprof %s: status %d", what, code)
	}
	return os.WriteFile(path, b, 0o644)
}

// kill ends the process with SIGKILL and waits for it.
func (p *ctrlProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.close()
}

// stop ends the process with SIGTERM, or SIGKILL after grace.
func (p *ctrlProc) stop(grace time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.close()
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		return p.err
	}
	return nil
}

func (p *ctrlProc) close() {
	p.client.CloseIdleConnections()
	_ = p.logf.Close()
}

// freePort returns a loopback address with a port free right now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// buildExchange builds the exchange binary from the main module (the one
// bench's go.mod replaces) into dir.
func buildExchange(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/exchangekit/exchange").Output()
	if err != nil {
		return "", fmt.Errorf("locate the main module: %w", err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(dir, "exchange")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/exchange")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/exchange in %s: %w\n%s", root, err, b)
	}
	return bin, nil
}
