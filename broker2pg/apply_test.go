package broker2pg_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/servicetest"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
)

const shapesSchema = `
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE marker (n int PRIMARY KEY);
CREATE TABLE toast (id int PRIMARY KEY, big text, small int);
ALTER TABLE toast ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE pk1 (id int PRIMARY KEY, v text);
CREATE TABLE pk2 (a int, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE nokey (x int, y text, doc xml);
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE nokey_big (x int, y text);
ALTER TABLE nokey_big REPLICA IDENTITY FULL;
CREATE TABLE parent_t (id int PRIMARY KEY);
CREATE TABLE child_t (id int PRIMARY KEY, parent int REFERENCES parent_t);
CREATE TABLE part (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu');
CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us');
CREATE TABLE gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
CREATE TABLE "Weird Table" ("select" int PRIMARY KEY, "Quote""d" text, "UPPER" text);
CREATE TABLE copied (id int PRIMARY KEY, v text);
CREATE TABLE types (
  id int PRIMARY KEY, n numeric, big numeric, f float8, f2 float8, d date, ts timestamptz,
  arr text[], md int[][], b bytea, u text, m mood, dom posint, c pair, r int4range,
  j jsonb, x xml, h hstore, ci citext, iv interval, uid uuid
);`

// shapeTables are compared row by row (row::text) after the shapes ran.
var shapeTables = []string{"toast", "pk1", "pk2", "nokey", "nokey_big", "parent_t", "child_t", "part", "part_eu", "part_us", "gen", `"Weird Table"`, "copied", "types"}

// TestApplyShapes covers FAULTS 10–20 end to end: pg2broker captures a
// source of one major, broker2pg applies it into a target of a newer one,
// and every table ends identical as row::text.
func TestApplyShapes(t *testing.T) {
	for _, pair := range [][2]int{{13, 17}, {15, 17}, {15, 18}, {17, 18}} {
		t.Run(fmt.Sprintf("pg%d-to-pg%d", pair[0], pair[1]), func(t *testing.T) {
			t.Parallel()
			testApplyShapes(t, pair[0], pair[1])
		})
	}
}

func testApplyShapes(t *testing.T, from, to int) {
	srcSrv, src := start(t, from)
	dstSrv, dst := start(t, to)
	b := brokertest.Start(t)
	bothSides(t, src, dst, shapesSchema)
	// The overlap of a snapshot: the target already holds a row the
	// source inserts again.
	exec(t, dst, `INSERT INTO pk1 VALUES (7, 'from the snapshot')`)
	topic := fmt.Sprintf("persistent://public/default/shapes-%d-%d", from, to)
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)

	big := strings.Repeat("0123456789abcdef", 1000)
	steps := []string{
		`INSERT INTO toast VALUES (1, '` + big + `', 1)`,
		`UPDATE toast SET small = 2 WHERE id = 1`,
		// FAULTS 19: a row above the 4 MiB message limit travels chunked.
		`INSERT INTO toast VALUES (2, repeat(md5('x'), 200000), 1)`,
		`INSERT INTO pk1 VALUES (1, 'one'), (7, 'seven')`,
		`UPDATE pk1 SET id = 100 WHERE id = 1`,
		`INSERT INTO pk2 VALUES (1, 1, 'one'), (2, 2, 'two')`,
		`UPDATE pk2 SET a = 10 WHERE a = 1 AND b = 1`,
		`UPDATE pk2 SET a = 20, b = 20, v = 'moved' WHERE a = 2`,
		// Several changes of one row in one transaction: compaction keeps
		// the net effect.
		`BEGIN; INSERT INTO pk1 VALUES (50, 'a'); UPDATE pk1 SET v = 'b' WHERE id = 50; DELETE FROM pk1 WHERE id = 50;
		 INSERT INTO pk1 VALUES (50, 'c'); UPDATE pk1 SET v = v || 'd' WHERE id = 50; INSERT INTO pk1 VALUES (51, 'x'); DELETE FROM pk1 WHERE id = 51; COMMIT`,
		`INSERT INTO nokey VALUES (1, 'dup', '<a/>'), (1, 'dup', '<a/>'), (2, 'other', NULL), (NULL, NULL, NULL)`,
		`DELETE FROM nokey WHERE ctid = (SELECT min(ctid) FROM nokey WHERE x = 1)`,
		`UPDATE nokey SET y = 'changed' WHERE x = 2`,
		`UPDATE nokey SET y = 'was null' WHERE x IS NULL`,
		`INSERT INTO parent_t VALUES (1), (2); INSERT INTO child_t VALUES (1, 1)`,
		`TRUNCATE parent_t, child_t`,
		`INSERT INTO parent_t VALUES (3); INSERT INTO child_t VALUES (3, 3)`,
		`TRUNCATE parent_t CASCADE`,
		`INSERT INTO part VALUES (1, 'eu', 1), (2, 'us', 2), (3, 'eu', 3)`,
		`UPDATE part SET v = 30 WHERE id = 2`,
		`UPDATE part SET region = 'us' WHERE id = 1`,
		`DELETE FROM part WHERE id = 3`,
		`INSERT INTO gen (a) VALUES (21), (22)`,
		`UPDATE gen SET a = 5 WHERE a = 21`,
		`INSERT INTO "Weird Table" VALUES (1, 'it''s', 'UP'), (2, 'two', 'x')`,
		`UPDATE "Weird Table" SET "Quote""d" = 'q' WHERE "select" = 1`,
		`DELETE FROM "Weird Table" WHERE "select" = 2`,
		`INSERT INTO types VALUES (
		  1, 'NaN', repeat('9', 1000)::numeric, 'Infinity', '-Infinity', '-infinity', 'infinity',
		  ARRAY[NULL, 'NULL', 'a,b', 'say "hi"', E'back\\slash', ''], '{{1,2},{3,4}}', '\x00ff00'::bytea,
		  'emoji 😀 ünïcødé', 'happy', 7, ROW(1, 'x, "y"'), '[1,10)', '{"k": [1, null, "v"]}',
		  '<a b="c">t</a>', 'k=>v, "n"=>NULL', 'MiXeD', '1 year 2 days', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')`,
		`INSERT INTO types (id, f, ts) VALUES (2, -0.0, '2026-11-22 01:30:11.482913+00')`,
		`UPDATE types SET n = 1.50 WHERE id = 1`,
		// FAULTS 12 at scale: 50,000 rows without key, 20,000 deleted in
		// one transaction, with duplicates.
		`INSERT INTO nokey_big SELECT g % 1000, 'row ' || (g % 1000) FROM generate_series(1, 50000) g`,
		`DELETE FROM nokey_big WHERE x < 400`,
	}
	for _, sql := range steps {
		exec(t, src, sql)
	}
	n, err := src.CopyFrom(context.Background(), pgx.Identifier{"copied"}, []string{"id", "v"},
		pgx.CopyFromSlice(500, func(i int) ([]any, error) { return []any{i, fmt.Sprint("row ", i)}, nil }))
	if err != nil || n != 500 {
		t.Fatalf("copy: %d rows, %v", n, err)
	}
	if from >= 14 {
		exec(t, src, `SELECT pg_logical_emit_message(true, 'pgtandem-test', 'hello')`)
	}
	started := time.Now()
	waitMarker(t, src, dst, svc, 1)
	if err := eventtest.SameRows(src, dst, shapeTables...); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %d → %d: %d statements applied identically in %s", from, to, len(steps), time.Since(started).Round(time.Millisecond))
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
