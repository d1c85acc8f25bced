// Package tracing tells the packages that make OpenTelemetry spans whether
// anyone records them, so that with tracing off (the default) a command costs
// no span at all: the global no-op tracer still allocates a span and a
// context per Start, some 250 bytes a send.
package tracing

import "go.opentelemetry.io/otel"

// defaultProvider is the global tracer provider before the program installs
// one: OpenTelemetry's delegating no-op.
var defaultProvider = otel.GetTracerProvider()

// Enabled reports whether the program has installed a tracer provider
// (otel.SetTracerProvider). It costs an atomic load and a comparison.
func Enabled() bool { return otel.GetTracerProvider() != defaultProvider }
