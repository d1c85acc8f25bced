package controller_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/testtrace"
)

func spanRecorder() *tracetest.SpanRecorder { return testtrace.Recorder() }

// TestSendSpanIsParentOfHandleSpan: the connector's handler runs in an
// exchange.handle span whose parent is the controller's exchange.send span,
// itself a child of the caller's span.
func TestSendSpanIsParentOfHandleSpan(t *testing.T) {
	rec := spanRecorder()
	h := newHarness(t, fastConfig())
	var inHandler trace.SpanContext
	c := h.connect(connOpts{target: "t1", connectorID: "gw", handlers: map[command.Type]command.Handler{
		"ECHO": command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
			inHandler = trace.SpanContextFromContext(ctx)
			return command.Succeeded(cmd, "ok")
		}),
	}})
	h.waitRegistered(c.id(), true)

	ctx, root := otel.Tracer("test").Start(t.Context(), "caller")
	if _, err := h.ctrl.Send(ctx, "t1", command.MustCommand("ECHO", nil)); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	root.End()

	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == root.SpanContext().TraceID() {
			byName[s.Name()] = s
		}
	}
	send, handle := byName[controller.SpanSend], byName[channel.SpanHandle]
	if send == nil || handle == nil {
		t.Fatalf("spans of the trace: %v; want %s and %s", byName, controller.SpanSend, channel.SpanHandle)
	}
	if send.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Errorf("send span's parent = %s, want the caller's %s", send.Parent().SpanID(), root.SpanContext().SpanID())
	}
	if handle.Parent().SpanID() != send.SpanContext().SpanID() {
		t.Errorf("handle span's parent = %s, want the send span %s", handle.Parent().SpanID(), send.SpanContext().SpanID())
	}
	if inHandler.SpanID() != handle.SpanContext().SpanID() {
		t.Errorf("the handler ran in span %s, want %s", inHandler.SpanID(), handle.SpanContext().SpanID())
	}
	want := map[attribute.Key]string{
		"exchange.target":       "t1",
		"exchange.channel":      c.id(),
		"exchange.command.type": "ECHO",
		"exchange.route":        "local",
		"exchange.status":       "SUCCEEDED",
	}
	got := map[attribute.Key]string{}
	for _, kv := range send.Attributes() {
		got[kv.Key] = kv.Value.String()
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("send span attribute %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

// TestSendSpanRecordsError: a send to a target without channels ends its
// span in error.
func TestSendSpanRecordsError(t *testing.T) {
	rec := spanRecorder()
	h := newHarness(t, fastConfig())
	ctx, root := otel.Tracer("test").Start(t.Context(), "caller")
	if _, err := h.ctrl.Send(ctx, "nobody", command.MustCommand("ECHO", nil)); err == nil {
		t.Fatal("Send() = nil error, want *NoChannelError")
	}
	root.End()
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == root.SpanContext().TraceID() && s.Name() == controller.SpanSend {
			if s.Status().Code.String() != "Error" {
				t.Errorf("send span status = %v, want Error", s.Status())
			}
			return
		}
	}
	t.Fatalf("no %s span", controller.SpanSend)
}
