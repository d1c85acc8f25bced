package batch_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
)

// recorder is a slog.Handler keeping each record's level, message and
// attributes (as strings).
type recorder struct {
	mu   sync.Mutex
	recs []recorded
}

type recorded struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	l := recorded{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, l)
	r.mu.Unlock()
	return nil
}

func (r *recorder) find(msg string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, l := range r.recs {
		if l.msg == msg {
			out = append(out, l)
		}
	}
	return out
}

// Every attempt's outcome is logged at INFO (WARN when the batch fails for
// good), with the batch, the target and the attempt.
func TestRunnerLogsAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if n == 0 {
				return &command.Reply{Status: command.StatusError, Error: "busy", Code: 503}, nil
			}
			return succeeded(c), nil
		}}
		rec := &recorder{}
		e := newEnv(t, batch.Config{Logger: slog.New(rec)}, send, nil)
		e.run()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1")})
		e.await("b1")
		synctest.Wait() // the runner logs after it stores the outcome

		retry := rec.find("batch: attempt failed; will retry")
		if len(retry) != 1 || retry[0].level != slog.LevelInfo || retry[0].attrs["batch"] != "b1" ||
			retry[0].attrs["target"] != "t1" || retry[0].attrs["attempt"] != "1" {
			t.Errorf("retry lines = %+v, want one INFO for b1, target t1, attempt 1", retry)
		}
		ok := rec.find("batch: succeeded")
		if len(ok) != 1 || ok[0].level != slog.LevelInfo || ok[0].attrs["target"] != "t1" || ok[0].attrs["attempts"] != "2" {
			t.Errorf("success lines = %+v, want one INFO for target t1 after 2 attempts", ok)
		}
	})
}
