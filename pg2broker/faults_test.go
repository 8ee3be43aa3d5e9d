package pg2broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"
)

const loadSchema = `CREATE TABLE load (txn int, i int, PRIMARY KEY (txn, i))`

// writeTxn commits transaction number txn with rows rows into load.
func writeTxn(ctx context.Context, conn *pgx.Conn, txn, rows int) error {
	_, err := conn.Exec(ctx, `INSERT INTO load SELECT $1, g FROM generate_series(1, $2) g`, txn, rows)
	return err
}

// TestOutages covers FAULTS 9: the broker and then PostgreSQL go away under
// load; capture retries, resumes, and nothing is lost or doubled.
func TestOutages(t *testing.T) {
	srv := pgtest.Start(t, 15)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, loadSchema)
	topic := "persistent://public/default/outages"
	stop := capture(t, srv, b.URL(), topic, func(c *pg2broker.Config) { c.RetryMax = time.Second })
	ctx := context.Background()
	rowsOf := map[int]int{}
	txn := 0
	write := func(conn *pgx.Conn, count int) {
		for i := 0; i < count; i++ {
			txn++
			rows := 1 + txn%7
			if err := writeTxn(ctx, conn, txn, rows); err != nil {
				t.Fatal(err)
			}
			rowsOf[txn] = rows
		}
	}
	write(conn, 50)
	b.Stop()
	write(conn, 50) // captured while the broker is down
	time.Sleep(2 * time.Second)
	b.Restart()
	write(conn, 50)
	if err := srv.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn = pgtest.Connect(t, srv, "postgres")
	write(conn, 50)
	txns := eventtest.ReadTxns(t, b.URL(), topic, len(rowsOf), 2*time.Minute)
	eventtest.CheckLoad(t, txns, "load", rowsOf)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSlotDroppedIsNeverRecreated covers FAULTS 7.
func TestSlotDroppedIsNeverRecreated(t *testing.T) {
	srv := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, loadSchema)
	topic := "persistent://public/default/dropped"
	stop := capture(t, srv, b.URL(), topic)
	exec(t, conn, `INSERT INTO load VALUES (1, 1)`)
	eventtest.ReadTxns(t, b.URL(), topic, 1, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The server's walsender leaves the slot a moment after the capture
	// disconnected.
	testwait.For(t, time.Minute, "slot released", func() error {
		_, err := conn.Exec(context.Background(), `SELECT pg_drop_replication_slot('pgtandem_src')`)
		return err
	})
	for _, create := range []bool{false, true} {
		err := runOnce(t, srv.DSN("postgres"), b.URL(), topic, create)
		var se *pg2broker.SlotError
		if !errors.As(err, &se) || !pg2broker.IsFatal(err) {
			t.Fatalf("create-slot=%v: Run = %v, want a fatal SlotError", create, err)
		}
	}
	var slots int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots`).Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("slots after refusal: %d, %v", slots, err)
	}
}

// TestSlotInvalidated covers FAULTS 8: a slot whose WAL was removed is a
// clear, fatal error, not an endless retry.
func TestSlotInvalidated(t *testing.T) {
	srv := pgtest.Start(t, 15, pgtest.WithSetting("max_slot_wal_keep_size", "1MB"), pgtest.WithSetting("wal_keep_size", "0"))
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, loadSchema)
	topic := "persistent://public/default/invalidated"
	stop := capture(t, srv, b.URL(), topic)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		exec(t, conn, `INSERT INTO load SELECT $1, g FROM generate_series(1, 20000) g`, i)
		exec(t, conn, `SELECT pg_switch_wal()`)
		exec(t, conn, `CHECKPOINT`)
	}
	var status string
	if err := conn.QueryRow(context.Background(), `SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgtandem_src'`).Scan(&status); err != nil || status != "lost" {
		t.Fatalf("wal_status = %q, %v; the test needs a lost slot", status, err)
	}
	start := time.Now()
	err := runOnce(t, srv.DSN("postgres"), b.URL(), topic, false)
	var se *pg2broker.SlotError
	if !errors.As(err, &se) || !pg2broker.IsFatal(err) {
		t.Fatalf("Run = %v, want a fatal SlotError", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("refusal took %s", time.Since(start))
	}
}

// TestLargeRowIsChunked covers FAULTS 19: a row far above the broker's
// message size limit arrives whole, in order with its neighbours.
func TestLargeRowIsChunked(t *testing.T) {
	srv := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, `CREATE TABLE blob (id int PRIMARY KEY, v text)`)
	topic := "persistent://public/default/large"
	capture(t, srv, b.URL(), topic)
	exec(t, conn, `INSERT INTO blob VALUES (1, 'small')`)
	// 22 MB of hex digits: over 5 MiB even after LZ4.
	exec(t, conn, `INSERT INTO blob SELECT 2, string_agg(md5(g::text), '') FROM generate_series(1, 700000) g`)
	exec(t, conn, `INSERT INTO blob VALUES (3, 'small'); INSERT INTO blob VALUES (4, 'small')`)
	txns := eventtest.ReadTxns(t, b.URL(), topic, 3, 2*time.Minute)
	var want string
	if err := conn.QueryRow(context.Background(), `SELECT v FROM blob WHERE id = 2`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	rows := eventtest.Changes(txns, "public", "blob")
	if len(rows) != 4 || eventtest.Value(rows[1].New, "v") != want {
		t.Fatalf("got %d rows; large value intact: %v", len(rows), len(rows) > 1 && eventtest.Value(rows[1].New, "v") == want)
	}
}

// runOnce runs a capture that is expected to stop by itself.
func runOnce(t *testing.T, dsn, url, topic string, createSlot bool) error {
	t.Helper()
	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL, cfg.CreateSlot = "src", dsn, topic, url, createSlot
	tel, err := telemetry.New("test")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pg2broker.New(cfg, servicetest.Logger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = svc.Run(ctx)
	if ctx.Err() != nil {
		return fmt.Errorf("still running after a minute (last state: %v)", svc.Ready())
	}
	return err
}
