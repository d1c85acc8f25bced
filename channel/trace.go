package channel

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/tracing"
)

// Tracing (OpenTelemetry). The channel carries the W3C trace context of the
// sender in the command's metadata, under the keys MetadataTraceparent and
// MetadataTracestate: Send injects the span of its ctx, and the receiving
// side runs the handler in a span "exchange.handle" whose parent is that
// span. Both are skipped, at the cost of one context lookup or one map
// lookup, when there is nothing to carry: the sender's ctx holds no valid
// span, or the command carries no traceparent. The tracer is the global one
// (otel.GetTracerProvider), a no-op until the program installs an SDK.
const (
	// MetadataTraceparent is the metadata key of the W3C traceparent.
	MetadataTraceparent = "traceparent"
	// MetadataTracestate is the metadata key of the W3C tracestate.
	MetadataTracestate = "tracestate"

	// TracerName is the instrumentation scope of the channel's spans.
	TracerName = "github.com/exchangekit/exchange/channel"
	// SpanHandle is the name of the span of a handler run.
	SpanHandle = "exchange.handle"
)

var traceContext propagation.TraceContext

// injectTrace writes the trace context of ctx's span into out's metadata (out
// is the channel's own copy of the command) if there is a valid one.
func injectTrace(ctx context.Context, out *command.Command) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	if out.Metadata == nil {
		out.Metadata = make(map[string]string, 2)
	}
	traceContext.Inject(ctx, propagation.MapCarrier(out.Metadata))
}

// startHandleSpan starts the span of cmd's handler run, a child of the
// sender's span, if cmd carries a trace context; it returns ctx and a nil
// span otherwise. With tracing off (no provider installed) the handler's
// context still carries the sender's trace context, so that what the
// handler sends on stays in the trace, but no span is started.
func startHandleSpan(ctx context.Context, cmd *command.Command) (context.Context, trace.Span) {
	if _, ok := cmd.Metadata[MetadataTraceparent]; !ok {
		return ctx, nil
	}
	ctx = traceContext.Extract(ctx, propagation.MapCarrier(cmd.Metadata))
	if !tracing.Enabled() {
		return ctx, nil
	}
	ctx, span := otel.Tracer(TracerName).Start(ctx, SpanHandle, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("exchange.command.type", string(cmd.Type)),
			attribute.String("exchange.command.id", cmd.ID),
		)
	}
	return ctx, span
}

// endHandleSpan records the outcome of the run in span (if not nil) and
// ends it. r is nil when no reply is sent.
func endHandleSpan(span trace.Span, r *command.Reply) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		switch {
		case r == nil:
			span.SetAttributes(attribute.String("exchange.status", "NO_REPLY_SENT"))
		case r.Status == command.StatusError:
			span.SetAttributes(attribute.String("exchange.status", r.Status.String()))
			span.SetStatus(codes.Error, r.Error)
		default:
			span.SetAttributes(attribute.String("exchange.status", r.Status.String()))
		}
	}
	span.End()
}
