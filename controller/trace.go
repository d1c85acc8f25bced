package controller

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/tracing"
)

const (
	// TracerName is the instrumentation scope of the controller's spans.
	TracerName = "github.com/exchangekit/exchange/controller"
	// SpanSend is the name of the span of Send, SendPrimary and SendVia.
	SpanSend = "exchange.send"
)

// tracer is the global tracer provider's, taken once: until the program
// installs a provider it is the global no-op, which forwards to the provider
// installed (the first one) from then on.
var tracer = otel.Tracer(TracerName)

var sendSpanKind = trace.WithSpanKind(trace.SpanKindClient) // made once: an option is an allocation

// startSendSpan starts the span of one send, from the global tracer provider.
// Until the program installs one it starts none and returns ctx and a nil
// span (ctx's trace context, if any, still travels with the command).
func startSendSpan(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (context.Context, trace.Span) {
	if !tracing.Enabled() {
		return ctx, nil
	}
	ctx, span := tracer.Start(ctx, SpanSend, sendSpanKind)
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

// endSendSpan records the route and outcome of a send and ends span (if not
// nil).
func endSendSpan(span trace.Span, rt Route, local bool, reply *command.Reply, err error) {
	if span == nil {
		return
	}
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
