package management

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// tracingExchange is fakeExchange that records the trace context SendVia is
// called with.
type tracingExchange struct {
	*fakeExchange
	seen chan trace.SpanContext
}

func (x tracingExchange) SendVia(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (*command.Reply, controller.Route, error) {
	x.seen <- trace.SpanContextFromContext(ctx)
	return x.fakeExchange.SendVia(ctx, targetID, cmd, primaryOnly)
}

// TestSendCommandCarriesTraceparent: the traceparent header of a POST
// .../commands becomes the remote parent of the send (so the controller's
// exchange.send span is its child); without one there is none.
func TestSendCommandCarriesTraceparent(t *testing.T) {
	ex := tracingExchange{newFakeExchange(), make(chan trace.SpanContext, 1)}
	ts := serveHTTP(t, newServer(t, Config{}, ex, newFakeBatches()))

	h := http.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("tracestate", "vendor=x")
	resp, body := do(t, ts, http.MethodPost, "/exchange/targets/t1/commands", `{"type":"ECHO"}`, h)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	sc := <-ex.seen
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" ||
		!sc.IsRemote() || !sc.IsSampled() || sc.TraceState().Get("vendor") != "x" {
		t.Errorf("SendVia's span context = %+v, want the header's, remote and sampled", sc)
	}

	resp, body = do(t, ts, http.MethodPost, "/exchange/targets/t1/commands", `{"type":"ECHO"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if sc := <-ex.seen; sc.IsValid() {
		t.Errorf("without a traceparent, SendVia's span context = %+v, want none", sc)
	}
}
