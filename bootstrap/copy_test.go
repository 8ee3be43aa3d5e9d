package bootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"
	"github.com/pgtandem/pgtandem/verify"
)

const schema = `
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE accounts (id bigserial PRIMARY KEY, owner citext, balance numeric(20,2), tags text[], meta hstore, m mood);
CREATE TABLE pairs (a int, b text, v jsonb, PRIMARY KEY (a, b));
CREATE TABLE journal (at timestamptz, what text);
ALTER TABLE journal REPLICA IDENTITY FULL;
CREATE TABLE part (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu');
CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us');
CREATE TABLE gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
CREATE TABLE "Odd ""Name""" ("select" int PRIMARY KEY, "Value" text);
CREATE INDEX accounts_owner ON accounts (owner);
CREATE TABLE marker (id int PRIMARY KEY);
-- A key of a domain over an enum has no '<' of its own: its ranges are cut
-- on the base type. 1,000 labels leave a histogram beside the common values.
DO $$ BEGIN EXECUTE 'CREATE TYPE label AS ENUM (' || (SELECT string_agg(quote_literal('l' || g), ', ' ORDER BY g) FROM generate_series(1, 1000) g) || ')'; END $$;
CREATE DOMAIN label_d AS label;
CREATE TABLE labelled (l label_d, n int, PRIMARY KEY (l, n));
INSERT INTO labelled SELECT ('l' || (g % 1000 + 1))::label, g FROM generate_series(1, 20000) g;
INSERT INTO accounts (owner, balance, tags, meta, m) SELECT 'Owner' || g, g * 1.25, ARRAY['a', NULL, 'c,d'], 'k=>v', 'ok' FROM generate_series(1, 20000) g;
INSERT INTO pairs SELECT g % 50, 'k' || g, jsonb_build_object('g', g) FROM generate_series(1, 2000) g;
INSERT INTO journal SELECT '2026-01-01'::timestamptz + g * interval '1 minute', 'dup' FROM generate_series(1, 300) g;
INSERT INTO journal SELECT '2026-01-01', 'dup' FROM generate_series(1, 3);
INSERT INTO part SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 1000) g;
INSERT INTO gen (a) SELECT g FROM generate_series(1, 100) g;
INSERT INTO "Odd ""Name""" VALUES (1, 'x');
ANALYZE;
`

// TestCopyThenStream: init copies while a write load runs on the source,
// then capture and apply take over from the handoff LSN, and verify finds
// both clusters equal: no gap, nothing applied twice.
func TestCopyThenStream(t *testing.T) {
	for _, major := range []int{15, 13} {
		t.Run(fmt.Sprintf("pg%d-to-17", major), func(t *testing.T) {
			t.Parallel()
			testCopyThenStream(t, major)
		})
	}
}

func testCopyThenStream(t *testing.T, major int) {
	ctx := context.Background()
	src, dst := pgtest.Start(t, major), pgtest.Start(t, 17)
	b := brokertest.Start(t)
	if _, err := pgtest.Connect(t, src, "postgres").Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("persistent://public/default/init-pg%d", major)

	stopLoad := load(t, src)
	cfg := bootstrap.Config{Source: "old", SourceDSN: src.DSN("postgres"), TargetDSN: dst.DSN("postgres"), Topic: topic, Jobs: 3, SplitRows: 5000}
	res, err := bootstrap.Copy(ctx, cfg, servicetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if res.HandoffLSN == 0 || len(res.Tables) < 8 {
		t.Fatalf("init result: %+v", res)
	}
	for _, tc := range res.Tables {
		if (tc.Table == "public.accounts" || tc.Table == "public.labelled") && (tc.Parts < 2 || tc.Rows < 20000) {
			t.Fatalf("%s (20,000 rows, split above 5,000) copied as %+v", tc.Table, tc)
		}
	}
	// A second init says the first one finished, and changes nothing.
	if again, err := bootstrap.Copy(ctx, cfg, servicetest.Logger()); err != nil || !again.AlreadyDone || again.HandoffLSN != res.HandoffLSN {
		t.Fatalf("second init: %+v, %v; want AlreadyDone at %s", again, err, res.HandoffLSN)
	}

	streamAndVerify(t, src, dst, b.URL(), topic, stopLoad)
	// The sequence continues where the source's was at the snapshot or later.
	var srcSeq, dstSeq int64
	_ = pgtest.Connect(t, src, "postgres").QueryRow(ctx, `SELECT last_value FROM accounts_id_seq`).Scan(&srcSeq)
	_ = pgtest.Connect(t, dst, "postgres").QueryRow(ctx, `SELECT last_value FROM accounts_id_seq`).Scan(&dstSeq)
	if dstSeq < 20000 || dstSeq > srcSeq {
		t.Fatalf("target sequence at %d, source at %d", dstSeq, srcSeq)
	}
}

// streamAndVerify runs capture and apply from the handoff while the load
// goes on, until the target has applied what the source held when they
// started; then it stops the load, waits for a marker row, stops both
// services cleanly and requires verify to find source and target equal.
func streamAndVerify(t *testing.T, src, dst *pglocal.Server, url, topic string, stopLoad func()) {
	t.Helper()
	ctx := context.Background()
	srcConn, dstConn := pgtest.Connect(t, src, "postgres"), pgtest.Connect(t, dst, "postgres")
	var started pglogrepl.LSN
	if err := srcConn.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&started); err != nil {
		t.Fatal(err)
	}
	_, stopCapture := servicetest.Capture(t, src, "old", url, topic)
	_, stopApply := servicetest.Apply(t, dst, "old", "new", url, topic, func(c *broker2pg.Config) { c.SourceDSN = src.DSN("postgres") })
	testwait.For(t, 2*time.Minute, "the target applying the load past "+started.String(), func() error {
		var applied pglogrepl.LSN
		if err := dstConn.QueryRow(ctx, `SELECT commit_lsn FROM pgtandem.apply_progress WHERE source_cluster = 'old'`).Scan(&applied); err != nil {
			return err
		}
		if applied < started {
			return fmt.Errorf("applied up to %s", applied)
		}
		return nil
	})
	stopLoad()
	waitMarker(t, src, dst)
	if err := stopApply(); err != nil {
		t.Fatalf("broker2pg: %v", err)
	}
	if err := stopCapture(); err != nil {
		t.Fatalf("pg2broker: %v", err)
	}
	vcfg := verify.DefaultConfig()
	vcfg.SourceDSN, vcfg.TargetDSN = src.DSN("postgres"), dst.DSN("postgres")
	report, err := verify.Run(context.Background(), vcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !report.Equal() {
		for _, tr := range report.Tables {
			if tr.Status != verify.StatusEqual {
				t.Errorf("%s: %d source rows, %d target rows, rows %+v", tr.Table, tr.SourceRows, tr.TargetRows, tr.Rows)
			}
		}
		t.Fatalf("source and target differ after the handoff and streaming: schema %+v", report.Schema)
	}
}

// load writes to every table until stopped: inserts, updates (also of
// keys), deletes, so that changes before, during and after the snapshot
// must all land exactly once.
func load(t *testing.T, srv *pglocal.Server) (stop func()) {
	return servicetest.WriteUntilStopped(t, srv, func(i int) string {
		return fmt.Sprintf(`
				INSERT INTO accounts (owner, balance, tags, m) VALUES ('new%[1]d', %[1]d, ARRAY['x'], 'happy');
				UPDATE accounts SET balance = balance + 1 WHERE id = %[1]d %% 20000 + 1;
				UPDATE pairs SET a = a + 100 WHERE a = %[1]d %% 50 AND b = 'k' || %[1]d;
				DELETE FROM journal WHERE ctid = (SELECT min(ctid) FROM journal WHERE what = 'dup' AND at > '2026-01-01');
				INSERT INTO journal VALUES ('2026-02-01', 'load %[1]d');
				UPDATE part SET region = 'eu' WHERE id = %[1]d AND region = 'us';
				INSERT INTO gen (a) VALUES (%[1]d);`, i)
	})
}

// waitMarker writes a marker row on the source and waits until it arrives
// on the target: everything committed before it has been applied.
func waitMarker(t *testing.T, src, dst *pglocal.Server) {
	t.Helper()
	ctx := context.Background()
	if _, err := pgtest.Connect(t, src, "postgres").Exec(ctx, `INSERT INTO marker VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	conn := pgtest.Connect(t, dst, "postgres")
	testwait.For(t, 2*time.Minute, "the marker row on the target", func() error {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM marker`).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d marker rows", n)
		}
		return nil
	})
}

// waitLoadCommit waits until load commits a round on srv after the call:
// changes that come after whatever the test did before.
func waitLoadCommit(t *testing.T, srv *pglocal.Server) {
	t.Helper()
	ctx := context.Background()
	conn := pgtest.Connect(t, srv, "postgres")
	var before int64
	if err := conn.QueryRow(ctx, `SELECT max(id) FROM accounts`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, time.Minute, "a load round committed", func() error {
		var last int64
		if err := conn.QueryRow(ctx, `SELECT max(id) FROM accounts`).Scan(&last); err != nil {
			return err
		}
		if last <= before {
			return fmt.Errorf("accounts ends at id %d, as before", last)
		}
		return nil
	})
}

// TestCopyIntoExistingSchema: with --schema existing init copies the rows
// into tables the operator created (here with a column of the target's
// own), after naming the tables it lacks and refusing tables that hold rows;
// then streaming takes over and verify finds both sides equal.
func TestCopyIntoExistingSchema(t *testing.T) {
	ctx := context.Background()
	src, dst := pgtest.Start(t, 15), pgtest.Start(t, 17)
	b := brokertest.Start(t)
	if _, err := pgtest.Connect(t, src, "postgres").Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	var ddl []string
	for _, line := range strings.Split(schema, "\n") {
		if !strings.HasPrefix(line, "INSERT") && !strings.HasPrefix(line, `CREATE TABLE "Odd`) {
			ddl = append(ddl, line)
		}
	}
	target := pgtest.Connect(t, dst, "postgres")
	if _, err := target.Exec(ctx, strings.Join(ddl, "\n")+`
		ALTER TABLE accounts ADD COLUMN migrated bool NOT NULL DEFAULT true;
		INSERT INTO pairs VALUES (-1, 'there before', '{}');`); err != nil {
		t.Fatal(err)
	}
	topic := "persistent://public/default/init-existing"
	cfg := bootstrap.Config{Source: "old", SourceDSN: src.DSN("postgres"), TargetDSN: dst.DSN("postgres"), Topic: topic, Jobs: 2, ExistingSchema: true}

	if err := (bootstrap.Config{Source: "old", SourceDSN: "x", TargetDSN: "y", Topic: topic, Jobs: 1, AllowNonEmpty: true}).Validate(); err == nil {
		t.Fatal("--allow-nonempty without --schema existing accepted")
	}
	var missing *bootstrap.MissingTablesError
	if _, err := bootstrap.Copy(ctx, cfg, servicetest.Logger()); !errors.As(err, &missing) || len(missing.Tables) != 1 {
		t.Fatalf("a table missing on the target: %v, want a MissingTablesError naming it", err)
	}
	if _, err := target.Exec(ctx, `CREATE TABLE "Odd ""Name""" ("select" int PRIMARY KEY, "Value" text)`); err != nil {
		t.Fatal(err)
	}
	var notEmpty *bootstrap.NotEmptyError
	if _, err := bootstrap.Copy(ctx, cfg, servicetest.Logger()); !errors.As(err, &notEmpty) || !slices.Equal(notEmpty.Tables, []string{"public.pairs"}) {
		t.Fatalf("a target table holding a row: %v, want a NotEmptyError naming public.pairs", err)
	}
	// The refused run is recorded: running on with other flags is refused.
	restore := cfg
	restore.ExistingSchema = false
	if _, err := bootstrap.Copy(ctx, restore, servicetest.Logger()); err == nil || !strings.Contains(err.Error(), "ran with --schema existing") {
		t.Fatalf("resuming an init of --schema existing without it: %v", err)
	}
	if _, err := target.Exec(ctx, `DELETE FROM pairs`); err != nil {
		t.Fatal(err)
	}

	stopLoad := load(t, src)
	res, err := bootstrap.Copy(ctx, cfg, servicetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if res.HandoffLSN == 0 {
		t.Fatalf("init result: %+v", res)
	}
	streamAndVerify(t, src, dst, b.URL(), topic, stopLoad)
}
