// Package testtrace gives tests one span recorder per test binary: the
// global OpenTelemetry tracer provider can be installed only once for the
// tracers already handed out, so every test of a binary shares it and tells
// its own spans apart by trace id. Only tests import it (the layering test
// keeps the OpenTelemetry SDK out of the libraries).
package testtrace

import (
	"sync"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

var (
	once sync.Once
	rec  *tracetest.SpanRecorder
)

// Recorder installs, on first use, a global tracer provider recording every
// span, and returns its recorder.
func Recorder() *tracetest.SpanRecorder {
	once.Do(func() {
		rec = tracetest.NewSpanRecorder()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	})
	return rec
}

// Spans returns the ended spans of trace id.
func Spans(id trace.TraceID) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range Recorder().Ended() {
		if s.SpanContext().TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}
