package connector_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// logRecorder is a slog.Handler keeping each record's level, message and
// attributes (as strings); changed (buffered 1) is signalled on each.
type logRecorder struct {
	mu      sync.Mutex
	recs    []logLine
	changed chan struct{}
}

type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{}, 1)} }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	l := logLine{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, l)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

// wait waits until n records with message msg are logged, and returns them.
func (r *logRecorder) wait(ctx context.Context, t *testing.T, msg string, n int) []logLine {
	t.Helper()
	for {
		var out []logLine
		r.mu.Lock()
		for _, l := range r.recs {
			if l.msg == msg {
				out = append(out, l)
			}
		}
		r.mu.Unlock()
		if len(out) >= n {
			return out
		}
		select {
		case <-r.changed:
		case <-ctx.Done():
			t.Fatalf("%d %q lines logged, want %d: %v", len(out), msg, n, ctx.Err())
		}
	}
}

// namedDialer is a countingDialer with an address, as the gRPC and WebSocket
// dialers have.
type namedDialer struct {
	countingDialer
	addr string
}

func (d *namedDialer) String() string { return d.addr }

var _ channel.Dialer = (*namedDialer)(nil)

// A failed attempt logs one line naming the endpoint by its address.
func TestAttemptFailedLogsEndpointAddress(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	logs := newLogRecorder()
	cfg.Logger = slog.New(logs)
	c := newConnector(t, cfg, nil, &namedDialer{addr: "ctl-1:7400"}, &namedDialer{addr: "ctl-2:7400"})
	start(t, c)
	lines := logs.wait(ctx, t, "connector: connection attempt failed", 2)
	for i, want := range []struct{ endpoint, attempt string }{{"ctl-1:7400", "1"}, {"ctl-2:7400", "2"}} {
		if l := lines[i]; l.level != slog.LevelWarn || l.attrs["endpoint"] != want.endpoint || l.attrs["attempt"] != want.attempt {
			t.Errorf("line %d = %v %v, want WARN with endpoint=%s attempt=%s", i, l.level, l.attrs, want.endpoint, want.attempt)
		}
	}
	_ = c.Close()
}

// A channel ended by GOOD_BYE says so in plain words, at INFO; an endpoint
// without an address is named by its index.
func TestChannelLostLogsGoodBye(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	cfg := testConfig(t)
	logs := newLogRecorder()
	cfg.Logger = slog.New(logs)
	c := newConnector(t, cfg, nil, fc.dialer())
	start(t, c)
	p1 := fc.next(ctx)
	p1.send(ctx, t, command.TypeGoodBye, command.GoodByePayload{TargetID: "target-a", Reconnect: true})
	_ = p1.ch.Close()
	l := logs.wait(ctx, t, "connector: channel lost", 1)[0]
	if l.level != slog.LevelInfo || l.attrs["reason"] != "GOOD_BYE from the controller (asked to reconnect)" ||
		l.attrs["channelId"] != p1.id {
		t.Errorf("channel lost = %v %v, want INFO with the GOOD_BYE reason for %s", l.level, l.attrs, p1.id)
	}
	if got := l.attrs["endpoint"]; got != "#0" {
		t.Errorf("endpoint = %q, want #0 (the embedded listener has no address)", got)
	}
	fc.next(ctx)
	_ = c.Close()
}
