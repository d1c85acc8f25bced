package batch

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/internal/tracing"
)

const (
	// TracerName is the instrumentation scope of the batch runner's spans.
	TracerName = "github.com/exchangekit/exchange/batch"
	// SpanAttempt is the name of the span of one attempt of a batch; the
	// sends of its commands (exchange.send) are its children.
	SpanAttempt = "exchange.batch.attempt"
)

// startAttemptSpan starts the span of an attempt of b, from the global
// tracer provider. If a command of b carries a W3C trace context in its
// metadata (traceparent, as whoever created the batch put it there), every
// attempt joins that trace (the first such command's); otherwise each attempt
// is the root of a trace of its own. With tracing off it starts none and
// returns ctx and a nil span.
func startAttemptSpan(ctx context.Context, b *Batch) (context.Context, trace.Span) {
	if !tracing.Enabled() {
		return ctx, nil
	}
	for _, c := range b.Commands {
		if c.Command != nil && c.Command.Metadata["traceparent"] != "" {
			ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(c.Command.Metadata))
			break
		}
	}
	ctx, span := otel.Tracer(TracerName).Start(ctx, SpanAttempt)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("exchange.batch.id", b.ID),
			attribute.String("exchange.target", b.TargetID),
			attribute.Int("exchange.batch.attempt", b.Attempts),
			attribute.Int("exchange.batch.retry", b.Retry),
		)
	}
	return ctx, span
}

// endAttemptSpan records how the attempt left b and ends span.
func endAttemptSpan(span trace.Span, b *Batch) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("exchange.batch.status", b.Status.String()))
		if b.Status == StatusError || b.Status == StatusPending {
			span.SetStatus(codes.Error, b.Error)
		}
	}
	span.End()
}
