package verify_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/verify"
)

const fixture = `
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE accounts (id int PRIMARY KEY, balance numeric, note text);
INSERT INTO accounts SELECT g, g * 1.5, md5(g::text) FROM generate_series(1, 25000) g;
CREATE TABLE pairs (a int, b text, v jsonb, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT g % 100, 'k' || g, jsonb_build_object('g', g) FROM generate_series(1, 3000) g;
CREATE TABLE logs (at int, what text);
ALTER TABLE logs REPLICA IDENTITY FULL;
INSERT INTO logs SELECT g % 10, 'dup' FROM generate_series(1, 500) g;
CREATE TABLE typed (id int PRIMARY KEY, f float8, d date, arr text[], m mood, r int4range, b bytea,
  c char(5), vs varchar(10)[], big bigint, u uuid, small smallint, n numeric);
INSERT INTO typed VALUES (1, 'NaN', '-infinity', ARRAY[NULL, 'a,b', '"q"'], 'happy', '[1,5)', '\x00ff', 'a', '{x,y}', 1, NULL, 1, 1.0),
  (2, 1e-300, '2024-02-29', '{}', 'sad', 'empty', '', 'ab', NULL, -1, '6f1c0a2e-3f0e-4b7e-9a55-1b2c3d4e5f60', NULL, NULL),
  (3, 0, NULL, NULL, NULL, NULL, NULL, NULL, '{}', 9223372036854775807, NULL, 2, 2.50),
  (4, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 7, 3);
CREATE TABLE part (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu');
CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us');
INSERT INTO part SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 1000) g;
CREATE DOMAIN mood_d AS mood;
CREATE TABLE moods (m mood_d, n int, v text, PRIMARY KEY (m, n));
INSERT INTO moods SELECT CASE WHEN g % 2 = 0 THEN 'sad' ELSE 'happy' END::mood, g, 'v' || g FROM generate_series(1, 3000) g;
CREATE SEQUENCE invoice_no;
ANALYZE;
`

func TestVerify(t *testing.T) {
	src := pgtest.Start(t, 15)
	dst := pgtest.Start(t, 17)
	ctx := context.Background()
	srcConn, dstConn := pgtest.Connect(t, src, "postgres"), pgtest.Connect(t, dst, "postgres")
	if _, err := srcConn.Exec(ctx, fixture); err != nil {
		t.Fatal(err)
	}
	if _, err := dstConn.Exec(ctx, fixture); err != nil {
		t.Fatal(err)
	}
	// The target may have columns of its own.
	if _, err := dstConn.Exec(ctx, `ALTER TABLE accounts ADD COLUMN migrated bool DEFAULT true`); err != nil {
		t.Fatal(err)
	}
	cfg := verify.DefaultConfig()
	cfg.SourceDSN, cfg.TargetDSN, cfg.ChunkRows, cfg.Jobs = src.DSN("postgres"), dst.DSN("postgres"), 1000, 3
	var calls int
	report, err := verify.Run(ctx, cfg, func(done, total int64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if !report.Equal() {
		t.Fatalf("identical databases reported different: %+v %+v", report.Schema, tables(report))
	}
	if byName(report, "public.accounts").Chunks < 25 || byName(report, "public.accounts").SourceRows != 25000 || calls == 0 {
		t.Fatalf("accounts: %+v, progress calls %d", byName(report, "public.accounts"), calls)
	}
	if m := byName(report, "public.moods"); m.Chunks < 2 || m.SourceRows != 3000 {
		t.Fatalf("moods, keyed by a domain over an enum, chunked on its base type: %+v", m)
	}
	if byName(report, "public.part").SourceRows != 1000 {
		t.Fatalf("partitioned table compared through its root: %+v", byName(report, "public.part"))
	}

	for _, sql := range []string{
		`UPDATE accounts SET note = 'changed' WHERE id = 12345`,
		`DELETE FROM pairs WHERE a = 7 AND b = 'k7'`,
		`INSERT INTO pairs VALUES (999, 'extra', '{}')`,
		`DELETE FROM logs WHERE ctid = (SELECT min(ctid) FROM logs WHERE at = 3)`,
		`UPDATE typed SET f = 'Infinity' WHERE id = 1`,
		`UPDATE typed SET c = 'ab ' WHERE id = 2`, // char(n) pads: not a difference
		`UPDATE typed SET big = NULL, u = '6f1c0a2e-3f0e-4b7e-9a55-1b2c3d4e5f61' WHERE id = 2`,
		`UPDATE typed SET n = 2.5 WHERE id = 3`,               // equal as numbers, not as data
		`UPDATE typed SET small = NULL, big = 7 WHERE id = 4`, // the same value, moved to another column
		`UPDATE moods SET v = 'changed' WHERE m::mood = 'happy' AND n = 2999`,
		`DROP SEQUENCE invoice_no`,
		`ALTER TABLE part ADD COLUMN extra int`,
	} {
		if _, err := dstConn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if _, err := srcConn.Exec(ctx, `CREATE TABLE only_here (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	report, err = verify.Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if report.Equal() {
		t.Fatal("changed target reported equal")
	}
	want := map[string]string{
		"public.accounts": "12345: different",
		"public.pairs":    "7, k7: missing on target|999, extra: only on target",
		"public.logs":     "(3,dup): 50 on source, 49 on target",
		"public.typed":    "1: different|2: different|3: different|4: different",
		"public.moods":    "happy, 2999: different",
	}
	for table, rows := range want {
		res := byName(report, table)
		var got []string
		for _, r := range res.Rows {
			got = append(got, r.Key+": "+r.Issue)
		}
		if res.Status != verify.StatusDifferent || strings.Join(got, "|") != rows {
			t.Errorf("%s: status %s, rows %q, want %q", table, res.Status, strings.Join(got, "|"), rows)
		}
	}
	if res := byName(report, "public.part"); res.Status != verify.StatusEqual {
		t.Errorf("extra target column counted as a difference: %+v", res)
	}
	schema := map[string]bool{}
	for _, d := range report.Schema {
		schema[d.Object+": "+d.Issue] = true
	}
	for _, d := range []string{"table public.only_here: missing on target", "sequence public.invoice_no: missing on target"} {
		if !schema[d] {
			t.Errorf("schema differences %v lack %q", report.Schema, d)
		}
	}
}

func byName(r *verify.Report, name string) *verify.TableResult {
	for _, t := range r.Tables {
		if t.Table == name {
			return t
		}
	}
	return &verify.TableResult{}
}

func tables(r *verify.Report) []verify.TableResult {
	var out []verify.TableResult
	for _, t := range r.Tables {
		out = append(out, verify.TableResult{Table: t.Table, Status: t.Status, SourceRows: t.SourceRows, TargetRows: t.TargetRows, Rows: t.Rows})
	}
	return out
}
