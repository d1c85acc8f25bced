package cluster

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/tracing"
	"github.com/exchangekit/exchange/state"
)

const (
	// TracerName is the instrumentation scope of the cluster's spans.
	TracerName = "github.com/exchangekit/exchange/cluster"
	// SpanForward is the name of the spans of a forwarded command: on the
	// sending node (client kind, around the link round trip) and on the
	// receiving node (server kind, around the local send).
	SpanForward = "exchange.forward"
)

// startForwardSpan starts an exchange.forward span of kind kind, from the
// global tracer provider. The link's channel carries its trace context to the
// other node in the link command's metadata. With tracing off it starts none
// and returns ctx and a nil span.
func startForwardSpan(ctx context.Context, kind trace.SpanKind, from, to string, ch state.ChannelID, cmd *command.Command) (context.Context, trace.Span) {
	if !tracing.Enabled() {
		return ctx, nil
	}
	ctx, span := otel.Tracer(TracerName).Start(ctx, SpanForward, trace.WithSpanKind(kind))
	if span.IsRecording() {
		if from != "" { // unknown on the receiving side
			span.SetAttributes(attribute.String("exchange.node.from", from))
		}
		span.SetAttributes(
			attribute.String("exchange.node.to", to),
			attribute.String("exchange.channel", string(ch)),
			attribute.String("exchange.command.type", string(cmd.Type)),
		)
	}
	return ctx, span
}

// endForwardSpan records the outcome and ends span (if not nil).
func endForwardSpan(span trace.Span, reply *command.Reply, err error) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		switch {
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		case reply != nil:
			span.SetAttributes(attribute.String("exchange.status", reply.Status.String()))
			if reply.Status == command.StatusError {
				span.SetStatus(codes.Error, reply.Error)
			}
		}
	}
	span.End()
}
