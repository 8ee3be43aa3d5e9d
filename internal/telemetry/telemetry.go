// Package telemetry gives each long-running service its OpenTelemetry meter,
// exported for Prometheus, and the HTTP endpoints Kubernetes probes:
// /metrics, /healthz (the process serves) and /readyz (the service is doing
// its job; a blocked apply or a capture waiting as standby is not ready).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Telemetry is one service's metrics pipeline.
type Telemetry struct {
	// Registry also takes the Pulsar client's own metrics, so one /metrics
	// shows both.
	Registry *prometheus.Registry
	Meter    metric.Meter
	provider *sdkmetric.MeterProvider
}

// New builds the meter of a service (the instrumentation scope name, e.g.
// "pgtandem/pg2broker").
func New(service string) (*Telemetry, error) {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	return &Telemetry{Registry: reg, Meter: provider.Meter(service), provider: provider}, nil
}

// Readiness reports nil when the service is ready, else why not.
type Readiness func() error

// Serve answers /metrics, /healthz and /readyz on addr until ctx ends. An
// empty addr serves nothing and returns when ctx ends.
func (t *Telemetry) Serve(ctx context.Context, addr string, ready Readiness, log *slog.Logger) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("telemetry: listen on %s: %w", addr, err)
	}
	return t.serve(ctx, ln, ready, log)
}

func (t *Telemetry) serve(ctx context.Context, ln net.Listener, ready Readiness, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("serving metrics and probes", "addr", ln.Addr().String())
	select {
	case err := <-done:
		return fmt.Errorf("telemetry: serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdown)
	<-done
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the meter provider.
func (t *Telemetry) Shutdown(ctx context.Context) error { return t.provider.Shutdown(ctx) }
