// Package pgtest is the one way tests start a throwaway PostgreSQL server of a
// given major: on a free loopback port, in a temporary folder, with logical
// decoding on, as the postgres OS user when the test runs as root.
//
// The server is removed when the test ends; when the test failed, its log is
// printed first, because most failures of a replication test are explained
// there.
package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pglocal"
)

// Option changes the server a test starts.
type Option func(*pglocal.Options)

// WithSetting sets one postgresql.conf parameter, e.g.
// WithSetting("synchronous_commit", "off").
func WithSetting(name, value string) Option {
	return func(o *pglocal.Options) { o.Settings[name] = value }
}

// Start starts a PostgreSQL server of the given major for the test and
// returns it. fsync is off unless a test asks for it: a killed server process
// keeps what it wrote in the page cache, and only a machine crash would need
// fsync.
//
// Under -short (make test-short) the test is skipped: short runs are the
// tests that need no server.
func Start(t testing.TB, major int, opts ...Option) *pglocal.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL: not in -short mode")
	}
	o := pglocal.Options{Major: major, Settings: map[string]string{"fsync": "off"}}
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := pglocal.Start(ctx, o)
	if err != nil {
		t.Fatalf("pgtest: start PostgreSQL %d: %v", major, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: PostgreSQL %d server log (%s), last lines:\n%s", major, srv.LogFile, srv.LogTail(200))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Remove(ctx); err != nil {
			t.Errorf("pgtest: remove PostgreSQL %d in %s: %v", major, srv.Dir, err)
		}
	})
	return srv
}

// Connect opens a connection to database db of srv, closed when the test ends.
func Connect(t testing.TB, srv *pglocal.Server, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN(db))
	if err != nil {
		t.Fatalf("pgtest: connect to PostgreSQL %d database %s: %v", srv.Major, db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs sql in database db of srv on a connection of its own, closed
// before it returns: a session left open would be one more that a switch's
// database fence terminates, and whose exit the machine pays for, inside
// the write pause a test measures.
func Exec(t testing.TB, srv *pglocal.Server, db, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := Connect(t, srv, db)
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: PostgreSQL %d database %s: %v", srv.Major, db, err)
	}
}
