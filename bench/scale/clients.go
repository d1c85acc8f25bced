package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// clientProc is one client process as the orchestrator sees it.
type clientProc struct {
	cfg   clientConfig
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed when the process has exited
	err   error

	mu      sync.Mutex
	last    status
	ready   bool
	stopped bool
	failure string
	accepts map[int64]int  // summed over the process's life
	errs    map[string]int // summed
	// examples holds the first failure's text of each kind.
	examples map[string]string
}

// startClient re-executes this binary as a client for cfg.
func startClient(self string, args []string, gogc int, cfg clientConfig, logPath string) (*clientProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), roleEnv+"=client")
	if gogc != 0 {
		cmd.Env = append(cmd.Env, "GOGC="+strconv.Itoa(gogc))
	}
	cmd.Stderr = logf
	dieWithParent(cmd)
	in, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start client: %w", err)
	}
	c := &clientProc{cfg: cfg, cmd: cmd, stdin: in, done: make(chan struct{}), accepts: map[int64]int{}, errs: map[string]int{}, examples: map[string]string{}}
	go func() {
		defer close(c.done)
		defer logf.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var s status
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				fmt.Fprintf(logf, "bad status line: %s\n", sc.Bytes())
				continue
			}
			c.mu.Lock()
			switch {
			case s.Error != "":
				c.failure = s.Error
			case s.Ready:
				c.ready = true
			case s.Stopped:
				c.stopped = true
			default:
				for k, v := range s.Accepts {
					c.accepts[k] += v
				}
				for k, v := range s.Errors {
					c.errs[k] += v
				}
				for k, v := range s.Examples {
					if _, ok := c.examples[k]; !ok {
						c.examples[k] = v
					}
				}
				s.Accepts, s.Errors, s.Examples = nil, nil, nil
				c.last = s
			}
			c.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
		c.err = cmd.Wait()
	}()
	b, _ := json.Marshal(cfg)
	if _, err := fmt.Fprintf(in, "%s\n", b); err != nil {
		c.kill()
		return nil, err
	}
	return c, nil
}

func (c *clientProc) send(line string) error {
	_, err := fmt.Fprintln(c.stdin, line)
	return err
}

func (c *clientProc) snapshot() (status, bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.ready, c.failure
}

// stop asks the client to close its connectors and exit, or kills it after
// grace.
func (c *clientProc) stop(grace time.Duration) {
	_ = c.send("stop")
	_ = c.stdin.Close()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.kill()
	}
}

func (c *clientProc) kill() {
	_ = c.cmd.Process.Kill()
	_ = c.stdin.Close()
	<-c.done
}

// fleet is every client process.
type fleet []*clientProc

// awaitReady waits until every client has built its connectors.
func (f fleet) awaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		n := 0
		for _, c := range f {
			_, ready, failure := c.snapshot()
			if failure != "" {
				return fmt.Errorf("client %d: %s", c.cfg.First, failure)
			}
			select {
			case <-c.done:
				return fmt.Errorf("client %d exited: %v", c.cfg.First, c.err)
			default:
			}
			if ready {
				n++
			}
		}
		if n == len(f) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clients not ready: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func (f fleet) broadcast(line string) {
	for _, c := range f {
		_ = c.send(line)
	}
}

// total sums the last status of every client. LastConn and LastTold are the
// latest of all; Mark is the oldest.
func (f fleet) total() status {
	var s status
	for i, c := range f {
		l, _, _ := c.snapshot()
		if i == 0 || l.Mark < s.Mark {
			s.Mark = l.Mark
		}
		s.Connected += l.Connected
		s.Since += l.Since
		s.Told += l.Told
		s.Primaries += l.Primaries
		s.RSSKiB += l.RSSKiB
		s.LastConn = max(s.LastConn, l.LastConn)
		s.LastTold = max(s.LastTold, l.LastTold)
	}
	return s
}

// accepts sums the connections per unix second of every client.
func (f fleet) accepts() map[int64]int {
	m := map[int64]int{}
	for _, c := range f {
		c.mu.Lock()
		for k, v := range c.accepts {
			m[k] += v
		}
		c.mu.Unlock()
	}
	return m
}

// errors sums the failed attempts of every client, by kind.
func (f fleet) errors() map[string]int {
	m := map[string]int{}
	for _, c := range f {
		c.mu.Lock()
		for k, v := range c.errs {
			m[k] += v
		}
		c.mu.Unlock()
	}
	return m
}

// errorExamples returns, for each kind of failed attempt, the text of the
// first one a client reported.
func (f fleet) errorExamples() map[string]string {
	m := map[string]string{}
	for _, c := range f {
		c.mu.Lock()
		for k, v := range c.examples {
			if _, ok := m[k]; !ok {
				m[k] = v
			}
		}
		c.mu.Unlock()
	}
	return m
}

func (f fleet) stop(grace time.Duration) {
	var wg sync.WaitGroup
	for _, c := range f {
		wg.Go(func() { c.stop(grace) })
	}
	wg.Wait()
}
