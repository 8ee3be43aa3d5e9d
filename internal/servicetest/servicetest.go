// Package servicetest is the one way tests run pgtandem's long-running
// services in-process: pg2broker and broker2pg against servers started by
// internal/pgtest and a broker started by internal/brokertest, stopped the
// way SIGTERM stops them when the test ends.
package servicetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/internal/testwait"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// Logger logs warnings; PGTANDEM_TEST_LOG=debug shows everything.
func Logger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PGTANDEM_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Run runs a service until the returned stop is called (the way SIGTERM
// ends it: its context is cancelled) or the test ends, and returns what Run
// returned.
func Run(t testing.TB, run func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var result error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(time.Minute):
				result = errors.New("service did not stop within a minute")
			}
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// NewCapture builds a pg2broker service for cluster on srv into topic,
// creating publication and slot when missing.
func NewCapture(t testing.TB, srv *pglocal.Server, cluster, url, topic string, mutate ...func(*pg2broker.Config)) *pg2broker.Service {
	t.Helper()
	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL, cfg.CreateSlot = cluster, srv.DSN("postgres"), topic, url, true
	for _, m := range mutate {
		m(&cfg)
	}
	tel, err := telemetry.New("test")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pg2broker.New(cfg, Logger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// Capture runs a capture (see NewCapture) and waits until it streams.
func Capture(t testing.TB, srv *pglocal.Server, cluster, url, topic string, mutate ...func(*pg2broker.Config)) (*pg2broker.Service, func() error) {
	t.Helper()
	svc := NewCapture(t, srv, cluster, url, topic, mutate...)
	stop := Run(t, svc.Run)
	testwait.For(t, time.Minute, "capture ready", svc.Ready)
	return svc, stop
}

// NewApply builds a broker2pg service applying source's topic into dst.
func NewApply(t testing.TB, dst *pglocal.Server, source, target, url, topic string, mutate ...func(*broker2pg.Config)) *broker2pg.Service {
	t.Helper()
	cfg := broker2pg.DefaultConfig()
	cfg.Source, cfg.Target, cfg.TargetDSN, cfg.Topic, cfg.PulsarURL = source, target, dst.DSN("postgres"), topic, url
	cfg.BlockedRetry, cfg.RetryMax = 500*time.Millisecond, time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	tel, err := telemetry.New("test")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker2pg.New(cfg, Logger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// Apply runs an apply (see NewApply).
func Apply(t testing.TB, dst *pglocal.Server, source, target, url, topic string, mutate ...func(*broker2pg.Config)) (*broker2pg.Service, func() error) {
	t.Helper()
	svc := NewApply(t, dst, source, target, url, topic, mutate...)
	return svc, Run(t, svc.Run)
}

// WaitSlotActive waits until a process streams from the replication slot,
// e.g. a pgtandem binary the test started.
func WaitSlotActive(t testing.TB, conn *pgx.Conn, slot string, timeout time.Duration) {
	t.Helper()
	testwait.For(t, timeout, "slot "+slot+" active", func() error {
		var active bool
		if err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil {
			return err
		}
		if !active {
			return errors.New("not active yet")
		}
		return nil
	})
}

// WriteUntilStopped runs the statements of round i = 1, 2, ... on srv, a
// few milliseconds apart, until stop is called; stop fails the test if a
// round failed. Tests use it to keep a source busy while a copy or a
// capture runs.
func WriteUntilStopped(t testing.TB, srv *pglocal.Server, round func(i int) string) (stop func()) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		defer conn.Close(context.Background())
		for i := 1; ctx.Err() == nil; i++ {
			if _, err := conn.Exec(context.Background(), round(i)); err != nil {
				done <- fmt.Errorf("write round %d: %w", i, err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		done <- nil
	}()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
