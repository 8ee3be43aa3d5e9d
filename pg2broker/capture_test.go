package pg2broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/servicetest"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// capture runs a capture of cluster "src" for the test and returns the
// function that stops it the way SIGTERM does.
func capture(t *testing.T, srv *pglocal.Server, url, topic string, mutate ...func(*pg2broker.Config)) (stop func() error) {
	t.Helper()
	_, stop = servicetest.Capture(t, srv, "src", url, topic, mutate...)
	return stop
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestCaptureShapes(t *testing.T) {
	for _, major := range []int{13, 15, 17} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			testCaptureShapes(t, major)
		})
	}
}

func testCaptureShapes(t *testing.T, major int) {
	srv := pgtest.Start(t, major)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, eventtest.ShapesSchema)
	topic := fmt.Sprintf("persistent://public/default/shapes-pg%d", major)
	stop := capture(t, srv, b.URL(), topic)

	big := strings.Repeat("0123456789abcdef", 1000) // 16 kB, stored out of line
	steps := []string{
		`INSERT INTO toast VALUES (1, '` + big + `', 1)`,
		`UPDATE toast SET small = 2 WHERE id = 1`,
		`INSERT INTO pk2 VALUES (1, 1, 'one'), (2, 2, 'two')`,
		`UPDATE pk2 SET a = 10 WHERE a = 1 AND b = 1`,
		`INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup'), (2, 'other')`,
		`DELETE FROM nokey WHERE ctid = (SELECT min(ctid) FROM nokey WHERE x = 1)`,
		`INSERT INTO parent_t VALUES (1); INSERT INTO child_t VALUES (1, 1)`,
		`TRUNCATE parent_t, child_t`,
		`INSERT INTO part VALUES (1, 'eu', 1), (2, 'us', 2)`,
		`UPDATE part SET v = 3 WHERE id = 2`,
		`INSERT INTO gen (a) VALUES (21)`,
		`INSERT INTO "Weird Table" VALUES (1, 'it''s', 'UP')`,
		eventtest.ShapesTypesRow,
	}
	for _, sql := range steps {
		exec(t, conn, sql)
	}
	// COPY writes multi-insert records: several rows share one LSN (FAULTS 3).
	n, err := conn.CopyFrom(context.Background(), pgx.Identifier{"copied"}, []string{"id", "v"},
		pgx.CopyFromSlice(500, func(i int) ([]any, error) { return []any{i, fmt.Sprint("row ", i)}, nil }))
	if err != nil || n != 500 {
		t.Fatalf("copy: %d rows, %v", n, err)
	}
	wantTxns := len(steps) + 1
	if major >= 14 {
		exec(t, conn, `SELECT pg_logical_emit_message(true, 'pgtandem-test', 'hello')`)
		wantTxns++
	}
	txns := eventtest.ReadTxns(t, b.URL(), topic, wantTxns, time.Minute)
	if len(txns) != wantTxns {
		t.Fatalf("read %d transactions, want %d", len(txns), wantTxns)
	}

	// FAULTS 10: the untouched TOAST value is marked, never sent as NULL.
	toast := eventtest.Changes(txns, "public", "toast")
	if len(toast) != 2 || eventtest.Value(toast[0].New, "big") != big {
		t.Fatalf("toast insert: %+v", toast)
	}
	if up := toast[1]; up.Kind != event.KindUpdate || !slices.Equal(up.Unchanged, []string{"big"}) || eventtest.Value(up.New, "big") != "<absent>" || eventtest.Value(up.New, "small") != "2" {
		t.Fatalf("toast update: kind %s unchanged %v new %v", up.Kind, up.Unchanged, up.New)
	}
	// FAULTS 11: a key change carries the old key.
	pk := eventtest.Changes(txns, "public", "pk2")
	if up := pk[2]; up.Kind != event.KindUpdate || eventtest.Value(up.Old, "a") != "1" || eventtest.Value(up.Old, "b") != "1" || eventtest.Value(up.New, "a") != "10" {
		t.Fatalf("key update: old %v new %v", up.Old, up.New)
	}
	if k := pk[2].Key(); k != "public.pk2:1,1" {
		t.Fatalf("key of key update = %q", k)
	}
	// FAULTS 12: REPLICA IDENTITY FULL delete carries the whole old row.
	nk := eventtest.Changes(txns, "public", "nokey")
	if del := nk[3]; del.Kind != event.KindDelete || del.ReplicaIdentity != "full" || eventtest.Value(del.Old, "x") != "1" || eventtest.Value(del.Old, "y") != "dup" {
		t.Fatalf("full delete: %+v", del)
	}
	// FAULTS 14: one TRUNCATE of both tables.
	var trunc *event.Event
	for _, tx := range txns {
		for _, ev := range tx.Changes {
			if ev.Kind == event.KindTruncate {
				trunc = ev
			}
		}
	}
	if trunc == nil || len(trunc.Tables) != 2 {
		t.Fatalf("truncate event: %+v", trunc)
	}
	// FAULTS 15: partition changes arrive as the root table.
	if parts := eventtest.Changes(txns, "public", "part"); len(parts) != 3 || eventtest.Changes(txns, "public", "part_eu") != nil {
		t.Fatalf("partition changes: %d on part", len(parts))
	}
	// FAULTS 16: generated columns are not published; identity values are.
	g := eventtest.Changes(txns, "public", "gen")[0]
	if eventtest.Value(g.New, "b") != "<absent>" || eventtest.Value(g.New, "id") != "1" || eventtest.Value(g.New, "a") != "21" {
		t.Fatalf("generated/identity columns: %v", g.New)
	}
	// FAULTS 18: identifiers arrive verbatim.
	w := eventtest.Changes(txns, "public", "Weird Table")
	if len(w) != 1 || eventtest.Value(w[0].New, `Quote"d`) != "it's" || eventtest.Value(w[0].New, "select") != "1" {
		t.Fatalf("weird identifiers: %+v", w)
	}
	// FAULTS 17: every value equals the source's own text form.
	typed := eventtest.Changes(txns, "public", "types")[0]
	for _, col := range typed.Columns {
		var want *string
		if err := conn.QueryRow(context.Background(), `SELECT `+pgx.Identifier{col.Name}.Sanitize()+`::text FROM types WHERE id = 1`).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got := typed.New[col.Name]; (got == nil) != (want == nil) || (got != nil && *got != *want) {
			t.Errorf("types.%s (%s): event %q, source %q", col.Name, col.Type, eventtest.Value(typed.New, col.Name), *want)
		}
	}
	// FAULTS 3: all COPY rows, none lost to a shared LSN.
	if c := eventtest.Changes(txns, "public", "copied"); len(c) != 500 {
		t.Fatalf("copied rows: %d, want 500", len(c))
	}
	if major >= 14 {
		last := txns[len(txns)-1].Changes[0]
		if last.Kind != event.KindMessage || last.Prefix != "pgtandem-test" || string(last.Content) != "hello" {
			t.Fatalf("logical message: %+v", last)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// TestPreflightRefusesTableWithoutIdentity covers FAULTS 13: the error names
// the table and the statement to run, and no publication is created.
func TestPreflightRefusesTableWithoutIdentity(t *testing.T) {
	srv := pgtest.Start(t, 17)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, `CREATE TABLE "Has Key" (id int PRIMARY KEY); CREATE TABLE "No Key" (x int)`)
	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL, cfg.CreateSlot = "src", srv.DSN("postgres"), "persistent://public/default/x", "pulsar://127.0.0.1:1", true
	tel, _ := telemetry.New("test")
	svc, err := pg2broker.New(cfg, servicetest.Logger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = svc.Run(ctx)
	var ri *catalog.ReplicaIdentityError
	if !errors.As(err, &ri) || !pg2broker.IsFatal(err) {
		t.Fatalf("Run = %v, want a fatal ReplicaIdentityError", err)
	}
	if !strings.Contains(err.Error(), `ALTER TABLE public."No Key" REPLICA IDENTITY FULL;`) || strings.Contains(err.Error(), "Has Key") {
		t.Fatalf("error does not name exactly the table without key: %v", err)
	}
	var pubs int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication`).Scan(&pubs); err != nil || pubs != 0 {
		t.Fatalf("publications after refusal: %d, %v", pubs, err)
	}
}
