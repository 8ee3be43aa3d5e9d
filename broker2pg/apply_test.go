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

// shapeTables are compared row by row (row::text) after the shapes ran.
var shapeTables = []string{"toast", "pk1", "pk2", "nokey", "nokey_big", "parent_t", "child_t", "part", "part_eu", "part_us", "gen", `"Weird Table"`, "copied", "types"}

// TestApplyShapes covers FAULTS 10–20 end to end: pg2broker captures a
// source of one major, broker2pg applies it into a target of a newer one,
// and every table ends identical as row::text.
func TestApplyShapes(t *testing.T) {
	for _, pair := range [][2]int{{13, 17}, {15, 17}, {15, 18}, {17, 18}, {17, 15}} {
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
	bothSides(t, src, dst, eventtest.ShapesSchema)
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
		eventtest.ShapesTypesRow,
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
