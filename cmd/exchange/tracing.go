package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// tracingFlags are the tracing flags of the long-running subcommands.
type tracingFlags struct {
	exporter string
}

func (t *tracingFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&t.exporter, "otel-exporter", "", "export OpenTelemetry traces: otlp (OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4317) or none; default: OTEL_TRACES_EXPORTER, else none")
}

// tracingShutdownTimeout bounds the flush of the spans still buffered at exit.
const tracingShutdownTimeout = 5 * time.Second

// start installs the global tracer provider the flags ask for, and returns
// the function that flushes it and shuts it down (to be called on exit).
// With tracing off it installs nothing: the libraries' spans stay no-ops.
func (t tracingFlags) start(ctx context.Context, service string, log *slog.Logger) (func(), error) {
	tp, err := newTracerProvider(ctx, t.exporter, service)
	if err != nil || tp == nil {
		return func() {}, err
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", "err", err) }))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetTracerProvider(tp)
	log.Info("tracing: exporting spans over OTLP/gRPC", "service", service)
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingShutdownTimeout)
		defer cancel()
		if err := tp.Shutdown(sctx); err != nil {
			log.Warn("tracing: flushing spans at exit failed", "err", err)
		}
	}, nil
}

// newTracerProvider returns the tracer provider of exporter ("" reads
// OTEL_TRACES_EXPORTER), or nil when tracing is off. The OTLP exporter takes
// its endpoint, headers and TLS from the standard OTEL_EXPORTER_OTLP_*
// variables; the resource's service.name is service unless OTEL_SERVICE_NAME
// or OTEL_RESOURCE_ATTRIBUTES say otherwise.
func newTracerProvider(ctx context.Context, exporter, service string) (*sdktrace.TracerProvider, error) {
	what := "--otel-exporter"
	if exporter == "" {
		exporter, what = os.Getenv("OTEL_TRACES_EXPORTER"), "OTEL_TRACES_EXPORTER"
	}
	switch strings.ToLower(strings.TrimSpace(exporter)) {
	case "", "none":
		return nil, nil
	case "otlp":
	default:
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("%s %q: want otlp or none", what, exporter)}
	}
	if p := os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "grpc" {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: only grpc is supported", p)}
	}
	exp, err := otlptracegrpc.New(ctx) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // after the default service.name: it wins
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
