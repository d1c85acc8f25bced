package main

import (
	"errors"
	"strings"
	"testing"
)

// TestTracingOffByDefault: without --otel-exporter and OTEL_TRACES_EXPORTER
// (or with none) no tracer provider is made.
func TestTracingOffByDefault(t *testing.T) {
	for _, env := range []string{"", "none"} {
		t.Setenv("OTEL_TRACES_EXPORTER", env)
		for _, flag := range []string{"", "none"} {
			tp, err := newTracerProvider(t.Context(), flag, "exchange-test")
			if tp != nil || err != nil {
				t.Errorf("flag %q, OTEL_TRACES_EXPORTER %q: newTracerProvider() = %v, %v; want nil, nil", flag, env, tp, err)
			}
		}
	}
}

// TestTracingOTLP: otlp, from the flag or the standard variable, makes a
// provider (the exporter connects lazily: nothing listens here) that shuts
// down cleanly; the flag wins over the variable.
func TestTracingOTLP(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	for _, tc := range []struct{ flag, env string }{{"otlp", ""}, {"", "otlp"}, {"OTLP", "none"}} {
		t.Setenv("OTEL_TRACES_EXPORTER", tc.env)
		tp, err := newTracerProvider(t.Context(), tc.flag, "exchange-test")
		if err != nil || tp == nil {
			t.Fatalf("flag %q, OTEL_TRACES_EXPORTER %q: newTracerProvider() = %v, %v; want a provider", tc.flag, tc.env, tp, err)
		}
		if err := tp.Shutdown(t.Context()); err != nil {
			t.Errorf("Shutdown() = %v", err)
		}
	}
	tp, err := newTracerProvider(t.Context(), "none", "exchange-test")
	if tp != nil || err != nil {
		t.Errorf("--otel-exporter none with OTEL_TRACES_EXPORTER=otlp: %v, %v; want off", tp, err)
	}
}

// TestTracingRefusesUnknownExporter: a typo is a usage error, for both
// subcommands.
func TestTracingRefusesUnknownExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	_, err := newTracerProvider(t.Context(), "jaeger", "exchange-test")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("newTracerProvider(jaeger) = %v, want a usage error", err)
	}
	for _, args := range [][]string{
		{"connector", "--target", "t1", "--controller", "127.0.0.1:7400", "--otel-exporter", "jaeger"},
		{"controller", "--in-memory", "--otel-exporter", "jaeger"},
	} {
		code, _, errOut := runArgs(t, args...)
		if code != exitUsage || !strings.Contains(errOut, `--otel-exporter "jaeger": want otlp or none`) {
			t.Errorf("%v: exit code %d, stderr %q; want 2 and the reason", args, code, errOut)
		}
	}
}
