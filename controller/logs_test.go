package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// logRecorder is a slog.Handler that keeps every record (with the attributes
// of its logger folded in) and passes it on to next; it fires sig on each.
type logRecorder struct {
	store *logStore
	attrs []slog.Attr
	next  slog.Handler
}

type logStore struct {
	mu   sync.Mutex
	recs []logLine
	sig  *signal
}

// logLine is one record: level, message and attributes as strings.
type logLine struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (l logLine) String() string { return fmt.Sprintf("%s %q %v", l.Level, l.Msg, l.Attrs) }

// recordLogs returns a logger that records into a store, and logs to t.
func recordLogs(t *testing.T) (*slog.Logger, *logStore) {
	st := &logStore{sig: newSignal()}
	return slog.New(&logRecorder{store: st, next: testLogger(t).Handler()}), st
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	line := logLine{Level: rec.Level, Msg: rec.Message, Attrs: map[string]string{}}
	for _, a := range r.attrs {
		line.Attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		line.Attrs[a.Key] = a.Value.String()
		return true
	})
	r.store.mu.Lock()
	r.store.recs = append(r.store.recs, line)
	r.store.mu.Unlock()
	r.store.sig.fire()
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{store: r.store, attrs: append(slices.Clip(r.attrs), as...), next: r.next.WithAttrs(as)}
}

func (r *logRecorder) WithGroup(name string) slog.Handler {
	return &logRecorder{store: r.store, attrs: r.attrs, next: r.next.WithGroup(name)}
}

// lines returns the records whose message is msg.
func (s *logStore) lines(msg string) []logLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logLine
	for _, l := range s.recs {
		if l.Msg == msg {
			out = append(out, l)
		}
	}
	return out
}

// wait waits until a record with message msg whose attributes include want
// is logged, and returns it.
func (s *logStore) wait(t *testing.T, msg string, want map[string]string) logLine {
	t.Helper()
	var found logLine
	waitFor(t, s.sig, fmt.Sprintf("log %q %v", msg, want), func() bool {
		for _, l := range s.lines(msg) {
			if hasAttrs(l, want) {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

func hasAttrs(l logLine, want map[string]string) bool {
	for k, v := range want {
		if l.Attrs[k] != v {
			return false
		}
	}
	return true
}

// A channel evicted by a failed health check is logged closed at WARN, with
// the reason in plain words, not a chain of context errors.
func TestChannelClosedLogsHealthReason(t *testing.T) {
	cfg := healthConfig(5 * time.Second)
	var logs *logStore
	cfg.Logger, logs = recordLogs(t)
	h := newHarness(t, cfg)
	c := h.connect(connOpts{target: "t1", connectorID: "gw", health: "unhealthy"})
	l := logs.wait(t, "controller: channel closed", map[string]string{"channel": c.id()})
	if l.Level != slog.LevelWarn {
		t.Errorf("level = %s, want WARN", l.Level)
	}
	want := map[string]string{"target": "t1", "connector": "gw"}
	if !hasAttrs(l, want) {
		t.Errorf("attrs = %v, want %v", l.Attrs, want)
	}
	if got := l.Attrs["reason"]; got != "health check failed: unhealthy: disk full" {
		t.Errorf("reason = %q, want %q", got, "health check failed: unhealthy: disk full")
	}
	h.waitClosed(c)
}

// A connector that goes away is logged at INFO: peer gone.
func TestChannelClosedLogsPeerGone(t *testing.T) {
	cfg := fastConfig()
	var logs *logStore
	cfg.Logger, logs = recordLogs(t)
	h := newHarness(t, cfg)
	c := h.connect(connOpts{target: "t1", connectorID: "gw"})
	h.waitRegistered(c.id(), true)
	c.close()
	l := logs.wait(t, "controller: channel closed", map[string]string{"channel": c.id()})
	if l.Level != slog.LevelInfo || l.Attrs["reason"] != "peer gone (stream ended)" {
		t.Errorf("logged %v, want INFO with reason peer gone (stream ended)", l)
	}
}

// A channel taken over by a newer one of its connector says so.
func TestTakeOverLogsReason(t *testing.T) {
	cfg := fastConfig()
	var logs *logStore
	cfg.Logger, logs = recordLogs(t)
	h := newHarness(t, cfg)
	old := h.connect(connOpts{target: "t", connectorID: "gw"})
	h.waitRegistered(old.id(), true)
	h.connect(connOpts{target: "t", connectorID: "gw"})
	logs.wait(t, "controller: channel taken over by a newer channel of its connector; closing it", map[string]string{
		"channel": old.id(), "target": "t", "connector": "gw",
		"reason": "evicted by take-over (a newer channel of its connector)",
	})
	h.waitClosed(old)
}

// Close says why it says GOOD_BYE to every channel.
func TestCloseLogsShutdownReason(t *testing.T) {
	cfg := fastConfig()
	var logs *logStore
	cfg.Logger, logs = recordLogs(t)
	h := newHarness(t, cfg)
	c := h.connect(connOpts{target: "t1", connectorID: "gw"})
	h.waitRegistered(c.id(), true)
	if err := h.ctrl.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	logs.wait(t, "controller: closing: GOOD_BYE to every channel", map[string]string{
		"channels": "1", "reason": "shutdown (controller closing)",
	})
	h.waitClosed(c)
}

// An election is logged with target, channel, connector and epoch; repeated
// failures to tell the connector are logged once per interval; a target left
// without channels logs its primary evicted.
func TestPrimaryLogs(t *testing.T) {
	cfg := fastConfig()
	var logs *logStore
	cfg.Logger, logs = recordLogs(t)
	h := newHarness(t, cfg)
	c := h.connect(connOpts{target: "t1", connectorID: "gw", failPrimary: 3})
	h.waitRegistered(c.id(), true)
	tgt, _ := h.ctrl.Target("t1")
	h.waitBelief(c, command.PrimaryPayload{Primary: true, Epoch: tgt.Epoch})
	epoch := fmt.Sprint(tgt.Epoch)
	l := logs.wait(t, "controller: primary elected; its connector was told", map[string]string{
		"target": "t1", "channel": c.id(), "connector": "gw", "epoch": epoch,
	})
	if l.Level != slog.LevelInfo {
		t.Errorf("level = %s, want INFO", l.Level)
	}
	failed := logs.lines("controller: PRIMARY notification failed; will retry")
	if len(failed) != 1 {
		t.Fatalf("logged %d failed notifications for 3 failures, want 1 (throttled): %v", len(failed), failed)
	}
	if want := map[string]string{"target": "t1", "connector": "gw", "epoch": epoch}; !hasAttrs(failed[0], want) {
		t.Errorf("failed notification attrs = %v, want %v", failed[0].Attrs, want)
	}

	c.close()
	logs.wait(t, "controller: primary evicted: the target has no channel left", map[string]string{"target": "t1"})
}

// A refused HELLO is logged with the target and connector it claimed.
func TestHelloRefusedLogsIdentity(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.StaticTokens("s3cret")
	var logs *logStore
	cfg.Logger, logs = recordLogs(t)
	h := newHarness(t, cfg)
	if _, err := h.dial(t.Context(), connOpts{target: "t1", connectorID: "gw", token: "wrong"}); err == nil {
		t.Fatal("dial with a wrong token succeeded")
	}
	l := logs.wait(t, "controller: HELLO refused", map[string]string{
		"target": "t1", "connector": "gw", "reason": "unauthenticated",
	})
	if l.Level != slog.LevelWarn {
		t.Errorf("level = %s, want WARN", l.Level)
	}
}

// A normal start and a connector's registration log no warning: without an
// Authenticator, warning is the application's job (exchange controller
// does, naming its flags), not the controller's as well.
func TestNormalStartHasNoWarning(t *testing.T) {
	cfg := fastConfig()
	var logs *logStore
	cfg.Logger, logs = recordLogs(t)
	h := newHarness(t, cfg)
	c := h.connect(connOpts{target: "t1", connectorID: "gw"})
	h.waitRegistered(c.id(), true)
	logs.wait(t, "controller: primary elected; its connector was told", map[string]string{"channel": c.id()})
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, l := range logs.recs {
		if l.Level >= slog.LevelWarn {
			t.Errorf("logged %v on a normal start", l)
		}
	}
}
