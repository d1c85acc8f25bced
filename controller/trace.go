package controller

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/command"
)

const (
	// TracerName is the instrumentation scope of the controller's spans.
	TracerName = "github.com/exchangekit/exchange/controller"
	// SpanSend is the name of the span of Send, SendPrimary and SendVia.
	SpanSend = "exchange.send"
)

// startSendSpan starts the span of one send, from the global tracer provider
// (a no-op unless the program installed one: then it costs a non-recording
// span and no attributes).
func startSendSpan(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (context.Context, trace.Span) {
	ctx, span := otel.Tracer(TracerName).Start(ctx, SpanSend, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("exchange.target", targetID),
			attribute.String("exchange.command.type", string(cmd.Type)),
			attribute.String("exchange.command.id", cmd.ID),
			attribute.Bool("exchange.primary_only", primaryOnly),
		)
	}
	return ctx, span
}

// endSendSpan records the route and outcome of a send and ends span.
func endSendSpan(span trace.Span, rt Route, local bool, reply *command.Reply, err error) {
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 4)
		if rt.ChannelID != "" {
			route := "remote"
			if local {
				route = "local"
			}
			attrs = append(attrs,
				attribute.String("exchange.channel", rt.ChannelID),
				attribute.String("exchange.node", rt.NodeID),
				attribute.String("exchange.route", route))
		}
		switch {
		case err != nil:
			attrs = append(attrs, attribute.String("exchange.outcome", "error"))
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		case reply != nil:
			attrs = append(attrs, attribute.String("exchange.outcome", "reply"),
				attribute.String("exchange.status", reply.Status.String()))
			if reply.Status == command.StatusError {
				span.SetStatus(codes.Error, reply.Error)
			}
		}
		span.SetAttributes(attrs...)
	}
	span.End()
}
