package pg2broker_test

import (
	"context"
	"errors"
	"fmt"
	osexec "os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
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
	svc, stop := servicetest.Capture(t, srv, "src", b.URL(), topic, func(c *pg2broker.Config) { c.RetryMax = time.Second })
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
	write(conn, 50)
	waitSlotSent(t, conn, "the 50 transactions written while the broker is down read from the slot")
	b.Restart()
	write(conn, 50)
	if err := srv.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, time.Minute, "capture noticing that PostgreSQL is gone", func() error {
		if err := svc.Ready(); err == nil || !strings.HasPrefix(err.Error(), "retrying") {
			return fmt.Errorf("state %v", err)
		}
		return nil
	})
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

// waitSlotSent waits until the capture's walsender has sent everything
// written so far.
func waitSlotSent(t *testing.T, conn *pgx.Conn, what string) {
	t.Helper()
	ctx := context.Background()
	var written pglogrepl.LSN
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&written); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, time.Minute, what, func() error {
		var sent pglogrepl.LSN
		err := conn.QueryRow(ctx, `SELECT r.sent_lsn FROM pg_stat_replication r
			JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = 'pgtandem_src'`).Scan(&sent)
		if err != nil {
			return err
		}
		if sent < written {
			return fmt.Errorf("sent up to %s of %s", sent, written)
		}
		return nil
	})
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
	checkStartReplicationRefused(t, srv, conn)
	for _, create := range []bool{false, true} {
		err := runOnce(t, srv.DSN("postgres"), b.URL(), topic, create)
		if !isFatalSlotError(err) {
			t.Fatalf("create-slot=%v: Run = %v, want a fatal SlotError", create, err)
		}
	}
	var slots int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots`).Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("slots after refusal: %d, %v", slots, err)
	}
}

// TestSlotInvalidated covers FAULTS 8: a slot whose WAL was removed is a
// clear, fatal error, not an endless retry, in whatever language the server
// writes its messages. PostgreSQL 15 runs with German lc_messages (Debian's
// package has the translations), so that recognising the error by English
// text fails; 17 is where pg_replication_slots has invalidation_reason.
func TestSlotInvalidated(t *testing.T) {
	for _, major := range []int{15, 17} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			testSlotInvalidated(t, major)
		})
	}
}

func testSlotInvalidated(t *testing.T, major int) {
	opts := []pgtest.Option{pgtest.WithSetting("max_slot_wal_keep_size", "1MB"), pgtest.WithSetting("wal_keep_size", "0")}
	if major == 15 {
		opts = append(opts, germanMessages(t))
	}
	srv := pgtest.Start(t, major, opts...)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	if major == 15 {
		requireGerman(t, conn)
	}
	exec(t, conn, loadSchema)
	topic := fmt.Sprintf("persistent://public/default/invalidated-pg%d", major)
	stop := capture(t, srv, b.URL(), topic)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		exec(t, conn, `INSERT INTO load SELECT $1, g FROM generate_series(1, 20000) g`, i)
		exec(t, conn, `SELECT pg_switch_wal()`)
		exec(t, conn, `CHECKPOINT`)
	}
	var status string
	if err := conn.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgtandem_src'`).Scan(&status); err != nil || status != "lost" {
		t.Fatalf("wal_status = %q, %v; the test needs a lost slot", status, err)
	}

	// Capture's preflight sees wal_status first, but a slot invalidated
	// between preflight and START_REPLICATION is told by the server's answer.
	checkStartReplicationRefused(t, srv, conn)

	start := time.Now()
	err := runOnce(t, srv.DSN("postgres"), b.URL(), topic, false)
	if !isFatalSlotError(err) {
		t.Fatalf("Run = %v, want a fatal SlotError", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("refusal took %s", time.Since(start))
	}
}

// checkStartReplicationRefused starts replication from slot pgtandem_src,
// which is gone or invalidated, and checks that the server's answer is
// recognised as a fatal SlotError.
func checkStartReplicationRefused(t *testing.T, srv *pglocal.Server, conn *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	repl, err := pgconn.Connect(ctx, srv.DSN("postgres")+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(ctx)
	startErr := pglogrepl.StartReplication(ctx, repl, "pgtandem_src", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'pgtandem'"}})
	if startErr == nil {
		t.Fatal("START_REPLICATION succeeded")
	}
	err = pg2broker.ClassifySlotError(ctx, conn, srv.Major, "pgtandem_src", startErr)
	t.Logf("START_REPLICATION: %v; classified as: %v", startErr, err)
	if !isFatalSlotError(err) {
		t.Errorf("START_REPLICATION's answer %q classified as %v, want a fatal SlotError", startErr, err)
	}
}

func isFatalSlotError(err error) bool {
	var se *pg2broker.SlotError
	return errors.As(err, &se) && pg2broker.IsFatal(err)
}

// germanMessages sets the server's lc_messages to German. The OS locale
// must exist (scripts/install-deps.sh generates it), or PostgreSQL would not
// start; it is checked when a server starts, not under -short.
func germanMessages(t *testing.T) pgtest.Option {
	return func(o *pglocal.Options) {
		out, err := osexec.Command("locale", "-a").Output()
		if err != nil || !strings.Contains(strings.ToLower(string(out)), "de_de.utf8") {
			t.Fatalf("the OS locale de_DE.UTF-8 is missing (locale -a: %q, %v): run scripts/install-deps.sh", out, err)
		}
		o.Settings["lc_messages"] = "'de_DE.UTF-8'"
	}
}

// requireGerman proves the server answers in German, so that a test meant
// to run without English messages cannot silently run with them.
func requireGerman(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	_, err := conn.Exec(context.Background(), `SELECT 1/0`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.DivisionByZero {
		t.Fatalf("SELECT 1/0 = %v, want a division_by_zero error", err)
	}
	if pgErr.Message != "Division durch Null" {
		t.Fatalf("the server's messages are not German: %q (are PostgreSQL's translations installed?)", pgErr.Message)
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

// TestRestartAfterChunkedTail restarts the capture when the topic's last
// message is a chunked frame: the restart reads that frame's header to
// resume after it, neither stuck nor repeating it.
func TestRestartAfterChunkedTail(t *testing.T) {
	srv := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, `CREATE TABLE blob (id int PRIMARY KEY, v text)`)
	topic := "persistent://public/default/large-tail"
	stop := capture(t, srv, b.URL(), topic)
	exec(t, conn, `INSERT INTO blob VALUES (1, 'small')`)
	exec(t, conn, `INSERT INTO blob SELECT 2, string_agg(md5(g::text), '') FROM generate_series(1, 700000) g`)
	eventtest.ReadTxns(t, b.URL(), topic, 2, 2*time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	capture(t, srv, b.URL(), topic)
	exec(t, conn, `INSERT INTO blob VALUES (3, 'small')`)
	txns := eventtest.ReadTxns(t, b.URL(), topic, 3, 2*time.Minute)
	if rows := eventtest.Changes(txns, "public", "blob"); len(rows) != 3 {
		t.Fatalf("%d rows in the topic after the restart, want 3", len(rows))
	}
}

// TestStopWhileTheBrokerIsDown stops capture (as SIGTERM does) while it waits
// for a broker that is down to acknowledge an in-band transaction (a switch
// marker, which is flushed at once): the stop returns within StopTimeout,
// confirms nothing the broker does not hold, and the next run delivers the
// transaction once.
func TestStopWhileTheBrokerIsDown(t *testing.T) {
	srv, b, conn := startInBand(t)
	topic := "persistent://public/default/stop-outage"
	const stopTimeout = 2 * time.Second
	bounded := func(c *pg2broker.Config) { c.StopTimeout, c.RetryMax = stopTimeout, time.Second }
	stop := capture(t, srv, b.URL(), topic, bounded)
	exec(t, conn, `INSERT INTO app VALUES (1)`)
	eventtest.ReadTxns(t, b.URL(), topic, 1, time.Minute)
	b.Stop()
	exec(t, conn, `INSERT INTO pgtandem.switch_marker VALUES ('m1')`)
	var marker pglogrepl.LSN
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()`).Scan(&marker); err != nil {
		t.Fatal(err)
	}
	waitSlotSent(t, conn, "the marker read from the slot")
	began := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if took := time.Since(began); took > stopTimeout+5*time.Second {
		t.Fatalf("stop took %s with a StopTimeout of %s", took, stopTimeout)
	}
	var confirmed pglogrepl.LSN
	if err := conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgtandem_src'`).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if confirmed >= marker {
		t.Fatalf("slot confirmed %s, past the marker at %s that the broker never acknowledged", confirmed, marker)
	}
	b.Restart()
	capture(t, srv, b.URL(), topic, bounded)
	txns := eventtest.ReadTxns(t, b.URL(), topic, 2, time.Minute)
	if len(txns) != 2 || txns[1].Changes[0].Table != "switch_marker" {
		t.Fatalf("topic holds %d transactions, want the app row and the marker once", len(txns))
	}
}
