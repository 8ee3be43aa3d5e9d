// Package tandemtest sets up what a switch needs, for tests and benchmarks:
// two PostgreSQL majors with the same tables, a broker, both directions of
// pgtandem running in-process (capture and apply each way), and a real
// PgBouncer in transaction pooling in front of the old cluster.
package tandemtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pgbouncertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// Database is the database clients use, on both clusters and in PgBouncer.
const Database = "postgres"

// Accounts is the number of rows of table acct.
const Accounts = 1000

// Schema is created on both clusters before either captures anything: a
// keyed table updated by the load, a bigserial table and an identity table
// the load inserts into, and sequences of every kind the switch must carry
// (standalone, descending, never called, one whose schema and name need
// quoting).
const Schema = `
CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
INSERT INTO acct SELECT g, 0 FROM generate_series(1, 1000) g;
CREATE TABLE ev_big (id bigserial PRIMARY KEY, aid int NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE ev_ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, aid int NOT NULL);
CREATE SEQUENCE standalone_seq;
CREATE SEQUENCE desc_seq INCREMENT BY -1 MINVALUE -1000000000 MAXVALUE -1 START WITH -1;
CREATE SEQUENCE never_called START WITH 42;
CREATE SCHEMA "Odd Schema";
CREATE SEQUENCE "Odd Schema"."seq ""quoted""" START WITH 7;
SELECT nextval('"Odd Schema"."seq ""quoted"""');
`

// PgbenchScript is one client transaction of the load: an update of an
// account, an insert into each event table, a standalone sequence call.
const PgbenchScript = `\set aid random(1, 1000)
BEGIN;
UPDATE acct SET balance = balance + 1 WHERE id = :aid;
INSERT INTO ev_big (aid) VALUES (:aid);
INSERT INTO ev_ident (aid) VALUES (:aid);
SELECT nextval('standalone_seq'), nextval('desc_seq');
END;
`

// Tandem is two clusters kept in tandem both ways, with PgBouncer in front.
type Tandem struct {
	Old, New *pglocal.Server
	Broker   *brokertest.Broker
	Bouncer  *pgbouncertest.Bouncer
	// OldTopic and NewTopic are each cluster's topic.
	OldTopic, NewTopic string
	// StopForward and StopReverse stop the apply of each direction (the
	// deadline test stops the forward one).
	StopForward, StopReverse func() error
}

// Options tune Start.
type Options struct {
	// BouncerSettings are extra [pgbouncer] settings.
	BouncerSettings map[string]string
	// Broker are options of the broker (retention, segment size).
	Broker []brokertest.Option
}

// Start starts everything for a switch from major old to major new: it
// waits until each capture streams from its slot, not until a change went
// through each direction (a switch's preflight probes prove that, within
// switch.max-lag).
func Start(t testing.TB, oldMajor, newMajor int, opts ...Options) *Tandem {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	td := &Tandem{Old: pgtest.Start(t, oldMajor), New: pgtest.Start(t, newMajor), Broker: brokertest.Start(t, o.Broker...)}
	for _, srv := range []*pglocal.Server{td.Old, td.New} {
		pgtest.Exec(t, srv, Database, Schema)
	}
	prefix := "persistent://public/default/" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	td.OldTopic, td.NewTopic = catalog.Topic(prefix, oldMajor), catalog.Topic(prefix, newMajor)
	url := td.Broker.URL()
	servicetest.Capture(t, td.Old, "old", url, td.OldTopic)
	_, td.StopForward = servicetest.Apply(t, td.New, "old", "new", url, td.OldTopic)
	servicetest.Capture(t, td.New, "new", url, td.NewTopic)
	_, td.StopReverse = servicetest.Apply(t, td.Old, "new", "old", url, td.NewTopic)
	var bouncerOpts []pgbouncertest.Option
	for k, v := range o.BouncerSettings {
		bouncerOpts = append(bouncerOpts, pgbouncertest.WithSetting(k, v))
	}
	td.Bouncer = pgbouncertest.Start(t, td.Old, Database, bouncerOpts...)
	return td
}

// SwitchConfig is the switch configuration from the cluster named from
// ("old" or "new") to the other, fenced by PgBouncer and the database.
func (td *Tandem) SwitchConfig(from string) switchover.Config {
	cfg := switchover.DefaultConfig()
	old := switchover.Cluster{Name: "old", DSN: td.Old.DSN(Database), Topic: td.OldTopic}
	nw := switchover.Cluster{Name: "new", DSN: td.New.DSN(Database), Topic: td.NewTopic}
	cfg.From, cfg.To = old, nw
	if from == "new" {
		cfg.From, cfg.To = nw, old
	}
	cfg.Fence = []string{switchover.FencePgBouncer, switchover.FenceDatabase}
	cfg.PgBouncer = switchover.PgBouncerConfig{Admin: []string{td.Bouncer.AdminDSN()}, Database: Database, DatabasesFile: td.Bouncer.DatabasesFile()}
	cfg.MaxLag = 5 * time.Second // two slow CI cores under load
	return cfg
}

// SwitchOptions are the options of an in-process switch: a Pulsar client
// of the tandem's broker, closed when the test ends.
func (td *Tandem) SwitchOptions(t testing.TB) switchover.Options {
	t.Helper()
	client, err := pulsarclient.New(pulsarclient.Options{URL: td.Broker.URL(), Log: servicetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return switchover.Options{Pulsar: client}
}

// ConfigFile writes a pgtandem YAML configuration for the CLI into dir and
// returns its path: both clusters, the broker, and the switch as
// SwitchConfig has it.
func (td *Tandem) ConfigFile(t testing.TB, dir string) string {
	t.Helper()
	cfg := td.SwitchConfig("old")
	yaml := fmt.Sprintf(`clusters:
  old: { dsn: %q, topic: %q }
  new: { dsn: %q, topic: %q }
pulsar:
  url: %q
  admin-url: %q
switch:
  fence: [pgbouncer, database]
  max-lag: %s
  pgbouncer:
    admin: [%q]
    database: %s
    databases-file: %q
`, td.Old.DSN(Database), td.OldTopic, td.New.DSN(Database), td.NewTopic, td.Broker.URL(), td.Broker.AdminURL(),
		cfg.MaxLag, td.Bouncer.AdminDSN(), Database, td.Bouncer.DatabasesFile())
	path := filepath.Join(dir, "pgtandem.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Sequences returns every sequence's last_value and is_called on srv, by
// name, to compare both sides after a switch.
func Sequences(t testing.TB, srv *pglocal.Server) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn := pgtest.Connect(t, srv, Database)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, name := range names {
		var v int64
		var called bool
		if err := conn.QueryRow(ctx, `SELECT last_value, is_called FROM `+name).Scan(&v, &called); err != nil {
			t.Fatal(err)
		}
		out[name] = fmt.Sprintf("%d/%v", v, called)
	}
	return out
}
