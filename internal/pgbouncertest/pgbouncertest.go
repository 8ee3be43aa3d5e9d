// Package pgbouncertest is the one way tests start a real PgBouncer in front
// of a PostgreSQL server started by internal/pgtest: [pgbouncerlocal] in a
// temporary folder, stopped and removed when the test ends. See
// pgbouncerlocal for what runs: a free loopback port, transaction pooling,
// no passwords, the postgres OS user when the test runs as root, and the
// [databases] section as an %include of [Bouncer.DatabasesFile], which a
// switch rewrites.
//
// # Clients
//
// In transaction pooling a client gets another server connection for every
// transaction, so it must not rely on named prepared statements: PgBouncer
// 1.18 does not track them. [Bouncer.Connect] returns a pgx connection in
// the simple protocol for that reason.
package pgbouncertest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pgbouncerlocal"
	"github.com/pgtandem/pgtandem/internal/pglocal"
)

// Option changes the bouncer a test starts.
type Option func(settings map[string]string)

// WithSetting sets one parameter of the [pgbouncer] section, e.g.
// WithSetting("query_wait_timeout", "5").
func WithSetting(name, value string) Option {
	return func(s map[string]string) { s[name] = value }
}

// Bouncer is one PgBouncer running for a test: Port, Dir, LogFile, DSN,
// AdminDSN, DatabasesFile and LogTail are pgbouncerlocal's.
type Bouncer struct {
	*pgbouncerlocal.Bouncer
}

// Start starts a PgBouncer whose database db leads to the database of the
// same name on backend, and stops it when the test ends (printing its log
// first when the test failed). The user postgres is the admin of its console.
//
// Under -short the test is skipped, as for pgtest.Start.
func Start(t testing.TB, backend *pglocal.Server, db string, opts ...Option) *Bouncer {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PgBouncer: not in -short mode")
	}
	settings := map[string]string{}
	for _, opt := range opts {
		opt(settings)
	}
	dir, err := os.MkdirTemp("", "pgbouncertest-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	local, err := pgbouncerlocal.Start(ctx, pgbouncerlocal.Options{Dir: dir, Backend: backend, Database: db, Settings: settings})
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("pgbouncertest: %v", err)
	}
	b := &Bouncer{local}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("pgbouncertest: %v", err)
		}
		if t.Failed() {
			t.Logf("pgbouncertest: PgBouncer log (%s):\n%s", b.LogFile, b.LogTail(100))
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("pgbouncertest: remove %s: %v", dir, err)
		}
	})
	return b
}

// Connect opens a connection to database db through the bouncer, in the
// simple protocol, closed when the test ends.
func (b *Bouncer) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(b.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgbouncertest: connect to %s through PgBouncer on port %d: %v", db, b.Port, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
