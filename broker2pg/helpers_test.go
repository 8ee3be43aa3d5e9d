package broker2pg_test

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
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// testLogger logs warnings; PGTANDEM_TEST_LOG=debug shows everything.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PGTANDEM_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// runInBackground runs a service until the returned stop is called (the way
// SIGTERM ends it) or the test ends.
func runInBackground(t *testing.T, run func(context.Context) error) (stop func() error) {
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

// capture runs pg2broker for cluster on srv into topic.
func capture(t *testing.T, srv *pglocal.Server, cluster, url, topic string) (stop func() error) {
	t.Helper()
	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL, cfg.CreateSlot = cluster, srv.DSN("postgres"), topic, url, true
	tel, err := telemetry.New("test")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pg2broker.New(cfg, testLogger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	stop = runInBackground(t, svc.Run)
	waitFor(t, time.Minute, "capture ready", func() error { return svc.Ready() })
	return stop
}

// apply runs broker2pg from topic into dst.
func apply(t *testing.T, dst *pglocal.Server, url, topic string, mutate ...func(*broker2pg.Config)) (*broker2pg.Service, func() error) {
	t.Helper()
	svc := newApply(t, dst, url, topic, mutate...)
	return svc, runInBackground(t, svc.Run)
}

func newApply(t *testing.T, dst *pglocal.Server, url, topic string, mutate ...func(*broker2pg.Config)) *broker2pg.Service {
	t.Helper()
	cfg := broker2pg.DefaultConfig()
	cfg.Source, cfg.Target, cfg.TargetDSN, cfg.Topic, cfg.PulsarURL = "src", "dst", dst.DSN("postgres"), topic, url
	cfg.BlockedRetry, cfg.RetryMax = 500*time.Millisecond, time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	tel, err := telemetry.New("test")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker2pg.New(cfg, testLogger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitMarker writes a marker row on the source and waits until the target
// has it: everything committed before it is then applied.
func waitMarker(t *testing.T, src, dst *pgx.Conn, svc *broker2pg.Service, n int) {
	t.Helper()
	exec(t, src, `INSERT INTO marker VALUES ($1)`, n)
	waitFor(t, 2*time.Minute, fmt.Sprintf("marker %d applied", n), func() error {
		var ok bool
		if err := dst.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM marker WHERE n = $1)`, n).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("not yet (service: %v)", svc.Ready())
		}
		return nil
	})
}

func bothSides(t *testing.T, src, dst *pgx.Conn, ddl string) {
	t.Helper()
	exec(t, src, ddl)
	exec(t, dst, ddl)
}

func start(t *testing.T, major int, opts ...pgtest.Option) (*pglocal.Server, *pgx.Conn) {
	srv := pgtest.Start(t, major, opts...)
	return srv, pgtest.Connect(t, srv, "postgres")
}
