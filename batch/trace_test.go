package batch_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"testing/synctest"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/testtrace"
)

func spanRecorder() *tracetest.SpanRecorder { return testtrace.Recorder() }

// TestAttemptSpans: each attempt is an exchange.batch.attempt span, a child
// of the trace context the batch's commands carry, and each send runs in
// the span of its attempt.
func TestAttemptSpans(t *testing.T) {
	rec := spanRecorder()
	// A trace of its own per run: the recorder is shared by the test binary.
	traceID, spanID := randomHex(t, 16), randomHex(t, 8)
	synctest.Test(t, func(t *testing.T) {
		var (
			mu    sync.Mutex
			sends []trace.SpanContext
		)
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			mu.Lock()
			sends = append(sends, trace.SpanContextFromContext(ctx))
			mu.Unlock()
			if c.ID == "c2" && n == 1 {
				return &command.Reply{Status: command.StatusError, Error: "busy", Code: 503}, nil
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{}, send, nil)
		e.run()
		cmds := commands("c1", "c2")
		cmds[0].Command.Metadata = map[string]string{"traceparent": "00-" + traceID + "-" + spanID + "-01"}
		e.execute(batch.Batch{ID: "b-trace", TargetID: "t1", Commands: cmds})
		if b := e.await("b-trace"); b.Status != batch.StatusSucceeded || b.Attempts != 2 {
			t.Fatalf("batch = %v after %d attempts, want SUCCEEDED after 2", b.Status, b.Attempts)
		}
		synctest.Wait() // the runner has left the attempt (and ended its span)

		var attempts []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == batch.SpanAttempt && s.SpanContext().TraceID().String() == traceID {
				attempts = append(attempts, s)
			}
		}
		if len(attempts) != 2 {
			t.Fatalf("%d %s spans in the trace, want 2", len(attempts), batch.SpanAttempt)
		}
		for _, a := range attempts {
			if a.Parent().SpanID().String() != spanID || !a.Parent().IsRemote() {
				t.Errorf("attempt span's parent = %v, want the remote %s", a.Parent(), spanID)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		// c1 and c2 in the first attempt, c2 again in the second.
		want := []trace.SpanID{attempts[0].SpanContext().SpanID(), attempts[0].SpanContext().SpanID(), attempts[1].SpanContext().SpanID()}
		if len(sends) != len(want) {
			t.Fatalf("%d sends, want %d", len(sends), len(want))
		}
		for i, sc := range sends {
			if sc.SpanID() != want[i] {
				t.Errorf("send %d ran in span %s, want its attempt's %s", i, sc.SpanID(), want[i])
			}
		}
	})
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
