package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/management"
)

// lineBuffer collects what a command writes, line by line, and signals each
// write.
type lineBuffer struct {
	mu   sync.Mutex
	data strings.Builder
	more chan struct{}
}

func newLineBuffer() *lineBuffer { return &lineBuffer{more: make(chan struct{}, 1)} }

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.data.Write(p)
	b.mu.Unlock()
	select {
	case b.more <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data.String()
}

// waitLine waits, bounded by ctx, for a complete line matching re.
func (b *lineBuffer) waitLine(ctx context.Context, t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	for {
		s := b.String()
		if i := strings.LastIndexByte(s, '\n'); i >= 0 {
			for l := range strings.SplitSeq(s[:i], "\n") {
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			}
		}
		select {
		case <-b.more:
		case <-ctx.Done():
			t.Fatalf("no line matching %q in:\n%s", re, s)
		}
	}
}

// ctlEvents runs "exchange ctl events" in-process. wait waits (bounded by
// ctx) for it to exit by itself and returns its exit code; stop does what
// Ctrl-C does first.
func ctlEvents(ctx context.Context, t *testing.T, args ...string) (out, errb *lineBuffer, wait, stop func() int) {
	t.Helper()
	out, errb = newLineBuffer(), newLineBuffer()
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	code := -1
	go func() {
		defer close(done)
		code = run(cctx, append([]string{"ctl"}, args...), out, errb)
	}()
	wait = func() int {
		select {
		case <-done:
			return code
		case <-ctx.Done():
			cancel()
			<-done
			t.Fatalf("ctl events did not exit: %v", ctx.Err())
			return -1
		}
	}
	stop = func() int {
		cancel() // what Ctrl-C does to run's context
		<-done
		return code
	}
	t.Cleanup(func() { stop() })
	return out, errb, wait, stop
}

// TestCtlEventsFollowsARealController: a controller binary, connectors
// coming and going, and ctl events printing what happens as it happens.
func TestCtlEventsFollowsARealController(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	ctrl, grpcAddr, httpURL := startController(ctx, t, "--in-memory", "--management-token", "mt")

	table, _, waitTable, _ := ctlEvents(ctx, t, "--addr", httpURL, "--token", "mt", "events")
	table.waitLine(ctx, t, regexp.MustCompile(`^TIME +KIND +TARGET +DETAILS$`)) // the stream is open
	jsonl, jsonErr, _, stopJSON := ctlEvents(ctx, t, "--addr", httpURL, "--token", "mt", "-o", "JSON", "events")
	jsonErr.waitLine(ctx, t, regexp.MustCompile(`^following the events of `)) // on stderr: stdout is JSON only

	c1 := start(t, "c1", "connector", "--controller", grpcAddr, "--target", "t1", "--id", "c1")
	c1.waitLine(ctx, 0, primaryRe)
	table.waitLine(ctx, t, regexp.MustCompile(`channel_registered +t1 +channel=\S+ connector=c1 node=`))
	m := table.waitLine(ctx, t, regexp.MustCompile(`primary_elected +t1 +channel=\S+ connector=c1 node=\S+ epoch=(\d+)`))
	if m[1] == "0" {
		t.Errorf("primary elected with epoch 0")
	}
	c1.stop(ctx)
	table.waitLine(ctx, t, regexp.MustCompile(`channel_unregistered +t1 +channel=\S+ connector=c1 `))
	table.waitLine(ctx, t, regexp.MustCompile(`primary_evicted +t1 +epoch=\d+`))

	// The JSON lines say the same, one object per line.
	jsonl.waitLine(ctx, t, regexp.MustCompile(`"kind":"primary_evicted"`))
	if code := stopJSON(); code != 0 {
		t.Errorf("ctl -o json events: exit %d after Ctrl-C, want 0", code)
	}
	var kinds []string
	for l := range strings.SplitSeq(strings.TrimSpace(jsonl.String()), "\n") {
		var e management.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		if e.TargetID == "t1" {
			kinds = append(kinds, e.Kind)
		}
	}
	want := []string{"channel_registered", "primary_elected", "channel_unregistered", "primary_evicted"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Errorf("JSON events of t1: %v, want %v", kinds, want)
	}

	// The controller's shutdown ends the stream: ctl exits by itself, 0.
	ctrl.stop(ctx)
	if code := waitTable(); code != 0 {
		t.Errorf("ctl events: exit %d when the controller stopped, want 0", code)
	}
}

func TestCtlEventsUsage(t *testing.T) {
	addr := ctlServer(t)
	code, _, stderr := runCtl(t, "--addr", addr, "events", "extra")
	if code != exitUsage || !strings.Contains(stderr, "--help") {
		t.Errorf("ctl events extra: exit %d, %q; want %d and a pointer to --help", code, stderr, exitUsage)
	}
	code, _, stderr = runCtl(t, "--addr", addr, "-o", "yaml", "events")
	if code != exitUsage {
		t.Errorf("ctl -o yaml events: exit %d, %q; want %d", code, stderr, exitUsage)
	}
	// A server without an event source answers 501: exit 1, with its message.
	code, _, stderr = runCtl(t, "--addr", addr, "events")
	if code != 1 || !strings.Contains(stderr, "events are not available") {
		t.Errorf("ctl events on a server without events: exit %d, %q", code, stderr)
	}
	code, _, stderr = runCtl(t, "--addr", ctlServer(t, "tok"), "events")
	if code != exitUnauthorized {
		t.Errorf("ctl events without the token: exit %d, %q; want %d", code, stderr, exitUnauthorized)
	}
	code, _, _ = runCtl(t, "--addr", "http://127.0.0.1:1", "events")
	if code != exitUnreachable {
		t.Errorf("ctl events, nothing listening: exit %d, want %d", code, exitUnreachable)
	}
}
