package broker2pg_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

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
	testwait.For(t, 2*time.Minute, fmt.Sprintf("marker %d applied", n), func() error {
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

// captureStop runs pg2broker for cluster on srv into topic and returns its stop.
func captureStop(t *testing.T, srv *pglocal.Server, cluster, url, topic string) func() error {
	t.Helper()
	_, stop := servicetest.Capture(t, srv, cluster, url, topic)
	return stop
}

// backlogOf reads the subscription's backlog from b's admin API.
func backlogOf(t *testing.T, b *brokertest.Broker, topic, subscription string) (int64, error) {
	t.Helper()
	r, err := broker2pg.NewBacklogReader(b.AdminURL(), "", pulsarclient.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Backlog(context.Background(), topic, subscription)
}
