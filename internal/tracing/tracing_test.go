package tracing_test

import (
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/exchangekit/exchange/internal/tracing"
)

func TestEnabled(t *testing.T) {
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) }) // so the test runs again (-count) from the start
	if tracing.Enabled() {
		t.Fatal("Enabled() = true before any provider was installed")
	}
	otel.SetTracerProvider(noop.NewTracerProvider())
	if !tracing.Enabled() {
		t.Fatal("Enabled() = false after otel.SetTracerProvider")
	}
}
