package clustertest_test

import (
	"context"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/testtrace"
)

func spanRecorder() *tracetest.SpanRecorder { return testtrace.Recorder() }

// TestForwardedSendIsOneTrace: a send on node B to a connector on node A is
// one trace across both nodes and the connector: exchange.send (B) →
// exchange.forward (client, B) → exchange.handle of the link (A) →
// exchange.forward (server, A) → exchange.handle (connector), and the
// connector's handler runs in that last span.
func TestForwardedSendIsOneTrace(t *testing.T) {
	rec := spanRecorder()
	e := newEnv(t, 2)
	a, b := e.h.Nodes()[0], e.h.Nodes()[1]

	var (
		mu        sync.Mutex
		inHandler trace.SpanContext
	)
	mux := echoMux()
	mux.RegisterFunc("TRACED", func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		mu.Lock()
		inHandler = trace.SpanContextFromContext(ctx)
		mu.Unlock()
		return command.Succeeded(cmd, nil)
	})
	c := e.connect("t-trace", a, connOpts{mux: mux, only: true})
	ch := e.waitConnected(c)
	e.waitPrimary("t-trace", ch)

	ctx, root := otel.Tracer("test").Start(t.Context(), "caller")
	_, rt, err := e.ctl(b).ctrl.SendVia(ctx, "t-trace", &command.Command{ID: command.NewID(), Type: "TRACED"}, false)
	if err != nil {
		t.Fatalf("SendVia() = %v", err)
	}
	root.End()
	if rt.NodeID != a.ID {
		t.Fatalf("sent via node %s, want %s (forwarded)", rt.NodeID, a.ID)
	}

	byParent := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == root.SpanContext().TraceID() {
			byParent[s.Parent().SpanID()] = append(byParent[s.Parent().SpanID()], s)
		}
	}
	// Walk the chain from the caller's span, one child at each step.
	parent := root.SpanContext().SpanID()
	var last sdktrace.ReadOnlySpan
	for _, want := range []struct {
		name string
		kind trace.SpanKind
	}{
		{controller.SpanSend, trace.SpanKindClient},
		{cluster.SpanForward, trace.SpanKindClient},
		{channel.SpanHandle, trace.SpanKindServer},
		{cluster.SpanForward, trace.SpanKindServer},
		{channel.SpanHandle, trace.SpanKindServer},
	} {
		kids := byParent[parent]
		if len(kids) != 1 || kids[0].Name() != want.name || kids[0].SpanKind() != want.kind {
			var names []string
			for _, k := range kids {
				names = append(names, k.Name()+"/"+k.SpanKind().String())
			}
			t.Fatalf("children of %s: %v, want one %s/%s", parent, names, want.name, want.kind)
		}
		last = kids[0]
		parent = last.SpanContext().SpanID()
	}
	mu.Lock()
	defer mu.Unlock()
	if inHandler.SpanID() != last.SpanContext().SpanID() {
		t.Errorf("the connector's handler ran in span %s, want the last exchange.handle %s", inHandler.SpanID(), last.SpanContext().SpanID())
	}
}
