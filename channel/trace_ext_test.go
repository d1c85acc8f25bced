package channel_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/testtrace"
)

func spanRecorder() *tracetest.SpanRecorder { return testtrace.Recorder() }

func spansOf(rec *tracetest.SpanRecorder, id trace.TraceID) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

func TestTraceContextReachesHandler(t *testing.T) {
	rec := spanRecorder()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	a, b := embedded.Pipe()
	var seen trace.SpanContext
	mux := command.NewMux()
	mux.RegisterFunc("T", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		seen = trace.SpanContextFromContext(ctx)
		return nil, nil
	})
	ca := channel.New(a, nil, channel.Config{})
	defer ca.Close()
	cb := channel.New(b, mux, channel.Config{})
	defer cb.Close()

	sctx, root := otel.Tracer("test").Start(ctx, "root")
	md := map[string]string{"k": "v"}
	if _, err := ca.Send(sctx, &command.Command{Type: "T", Metadata: md}); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	root.End()
	if len(md) != 1 {
		t.Errorf("Send changed the caller's metadata: %v", md)
	}
	spans := spansOf(rec, root.SpanContext().TraceID())
	var handle sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == channel.SpanHandle {
			handle = s
		}
	}
	if handle == nil {
		t.Fatalf("no %s span among %d of the trace", channel.SpanHandle, len(spans))
	}
	if got, want := handle.Parent().SpanID(), root.SpanContext().SpanID(); got != want {
		t.Errorf("handle span's parent = %s, want the sender's span %s", got, want)
	}
	if !handle.Parent().IsRemote() {
		t.Error("handle span's parent is not remote")
	}
	if seen.SpanID() != handle.SpanContext().SpanID() {
		t.Errorf("handler ran in span %s, want %s", seen.SpanID(), handle.SpanContext().SpanID())
	}
}

func TestNoTraceContextNoSpan(t *testing.T) {
	rec := spanRecorder()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	a, b := embedded.Pipe()
	var md map[string]string
	mux := command.NewMux()
	mux.RegisterFunc("T", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		md = c.Metadata
		if trace.SpanContextFromContext(ctx).IsValid() {
			t.Error("handler has a span without a sender's trace context")
		}
		return nil, nil
	})
	ca := channel.New(a, nil, channel.Config{})
	defer ca.Close()
	cb := channel.New(b, mux, channel.Config{})
	defer cb.Close()
	before := len(rec.Ended())
	if _, err := ca.Send(ctx, &command.Command{Type: "T"}); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	if _, ok := md[channel.MetadataTraceparent]; ok {
		t.Errorf("untraced send carried %v", md)
	}
	for _, s := range rec.Ended()[before:] {
		if s.Name() == channel.SpanHandle {
			t.Errorf("span %s recorded for an untraced send", s.Name())
		}
	}
}

func TestDetachKeepsSpan(t *testing.T) {
	spanRecorder()
	ctx, span := otel.Tracer("test").Start(t.Context(), "handler")
	defer span.End()
	hctx, cancel := channel.Detach(ctx, t.Context()) // parent: no span
	defer cancel()
	if got := trace.SpanContextFromContext(hctx).SpanID(); got != span.SpanContext().SpanID() {
		t.Errorf("Detach's context has span %s, want %s", got, span.SpanContext().SpanID())
	}
	ictx, icancel := channel.DetachInline(ctx, t.Context())
	defer icancel()
	if got := trace.SpanContextFromContext(ictx).SpanID(); got != span.SpanContext().SpanID() {
		t.Errorf("DetachInline's context has span %s, want %s", got, span.SpanContext().SpanID())
	}
}
