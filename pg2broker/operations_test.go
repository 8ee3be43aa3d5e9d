package pg2broker_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/internal/testwait"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// TestStandbyTakesOver covers FAULTS 23 for capture: a second replica for
// the same slot waits, not ready, and takes over when the first stops;
// nothing is lost or doubled across the hand-over.
func TestStandbyTakesOver(t *testing.T) {
	srv := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, loadSchema)
	topic := "persistent://public/default/standby"
	stopA := capture(t, srv, b.URL(), topic)
	ctx := context.Background()
	rowsOf := map[int]int{}
	for n := 1; n <= 20; n++ {
		if err := writeTxn(ctx, conn, n, 3); err != nil {
			t.Fatal(err)
		}
		rowsOf[n] = 3
	}

	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL = "src", srv.DSN("postgres"), topic, b.URL()
	tel, _ := telemetry.New("test")
	standby, err := pg2broker.New(cfg, servicetest.Logger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- standby.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	testwait.For(t, time.Minute, "the second replica to wait as standby", func() error {
		if err := standby.Ready(); err == nil || !strings.HasPrefix(err.Error(), "standby") {
			return fmt.Errorf("state %v", err)
		}
		return nil
	})

	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, time.Minute, "the standby to take over", standby.Ready)
	for n := 21; n <= 40; n++ {
		if err := writeTxn(ctx, conn, n, 2); err != nil {
			t.Fatal(err)
		}
		rowsOf[n] = 2
	}
	txns := eventtest.ReadTxns(t, b.URL(), topic, len(rowsOf), time.Minute)
	eventtest.CheckLoad(t, txns, "load", rowsOf)
}

// TestMetricsAndProbes checks what Kubernetes and Prometheus see.
func TestMetricsAndProbes(t *testing.T) {
	srv := pgtest.Start(t, 15)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, loadSchema)
	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL, cfg.CreateSlot = "src", srv.DSN("postgres"), "persistent://public/default/metrics", b.URL(), true
	tel, err := telemetry.New("pgtandem/pg2broker")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pg2broker.New(cfg, servicetest.Logger(), tel)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = tel.Serve(ctx, addr, svc.Ready, servicetest.Logger()) }()
	go func() { _ = svc.Run(ctx) }()
	base := "http://" + addr
	testwait.For(t, time.Minute, "/healthz", func() error { return getOK(base + "/healthz") })
	testwait.For(t, time.Minute, "/readyz to turn ready", func() error { return getOK(base + "/readyz") })
	for n := 1; n <= 5; n++ {
		if err := writeTxn(ctx, conn, n, 4); err != nil {
			t.Fatal(err)
		}
	}
	var body string
	testwait.For(t, time.Minute, "row and transaction counters", func() error {
		_, body = get(base + "/metrics")
		for _, want := range []string{`pgtandem_capture_rows_total{cluster="src"} 20`, `pgtandem_capture_transactions_total{cluster="src"} 5`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})
	for _, metric := range []string{"pgtandem_capture_confirmed_lsn", "pgtandem_capture_lag_bytes", "pgtandem_capture_lag_seconds",
		"pgtandem_capture_publish_latency_seconds_bucket", "pgtandem_capture_bytes_total", "pulsar_client"} {
		if !strings.Contains(body, metric) {
			t.Errorf("/metrics lacks %s", metric)
		}
	}
}

// TestOriginsNotCaptured: transactions applied with a pgtandem_* replication
// origin (what broker2pg does) never reach the topic, on the pre-16 path
// (Origin message filtering) and the 16+ path (origin 'none').
func TestOriginsNotCaptured(t *testing.T) {
	for _, major := range []int{15, 17} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			srv := pgtest.Start(t, major)
			b := brokertest.Start(t)
			conn := pgtest.Connect(t, srv, "postgres")
			exec(t, conn, loadSchema)
			topic := fmt.Sprintf("persistent://public/default/origins-pg%d", major)
			capture(t, srv, b.URL(), topic)
			exec(t, conn, `SELECT pg_replication_origin_create('pgtandem_peer')`)
			exec(t, conn, `INSERT INTO load VALUES (1, 1)`)
			exec(t, conn, `SELECT pg_replication_origin_session_setup('pgtandem_peer')`)
			exec(t, conn, `INSERT INTO load VALUES (2, 1)`)
			exec(t, conn, `INSERT INTO load VALUES (3, 1)`)
			exec(t, conn, `SELECT pg_replication_origin_session_reset()`)
			exec(t, conn, `INSERT INTO load VALUES (4, 1)`)
			txns := eventtest.ReadTxns(t, b.URL(), topic, 2, time.Minute)
			eventtest.CheckLoad(t, txns, "load", map[int]int{1: 1, 4: 1})
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// getOK reports anything but a 200 answer of url as an error.
func getOK(url string) error {
	code, body := get(url)
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, code, body)
	}
	return nil
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// startInBand starts PostgreSQL 17 with a switch marker table (in-band:
// see catalog.IsInBand) and a table app, and a broker.
func startInBand(t *testing.T) (*pglocal.Server, *brokertest.Broker, *pgx.Conn) {
	t.Helper()
	srv := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, `CREATE SCHEMA pgtandem;
		CREATE TABLE pgtandem.switch_marker (marker_id text PRIMARY KEY);
		CREATE TABLE app (id int PRIMARY KEY)`)
	return srv, b, conn
}

// TestInBandRowsSkipTheBatchDelay captures with a batching delay of an
// hour: an ordinary transaction waits in the producer's batch, and the
// next one, which writes a switch marker, sends both at once. A switch
// waits for its marker with clients paused; without the flush both would
// arrive after the hour, long past ReadTxns' minute.
func TestInBandRowsSkipTheBatchDelay(t *testing.T) {
	srv, b, conn := startInBand(t)
	topic := "persistent://public/default/in-band"
	capture(t, srv, b.URL(), topic, func(c *pg2broker.Config) { c.BatchDelay = time.Hour })
	exec(t, conn, `INSERT INTO app VALUES (1)`)
	exec(t, conn, `INSERT INTO pgtandem.switch_marker VALUES ('m1')`)
	txns := eventtest.ReadTxns(t, b.URL(), topic, 2, time.Minute)
	if got := txns[1].Changes[0].Table; got != "switch_marker" {
		t.Fatalf("second transaction wrote %s, want the marker", got)
	}
}

// TestBookkeepingNotPublished writes pgtandem's own state tables and a
// marker table of the same schema in one transaction: only the marker row
// reaches the topic, since one cluster's apply position copied into another
// would overwrite that cluster's own.
func TestBookkeepingNotPublished(t *testing.T) {
	srv := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	exec(t, conn, `CREATE SCHEMA pgtandem;
		CREATE TABLE pgtandem.apply_progress (source_cluster text PRIMARY KEY, commit_lsn pg_lsn);
		CREATE TABLE pgtandem.table_handoff (t text PRIMARY KEY);
		CREATE TABLE pgtandem.marker (n int PRIMARY KEY)`)
	topic := "persistent://public/default/bookkeeping"
	capture(t, srv, b.URL(), topic)
	exec(t, conn, `BEGIN;
		INSERT INTO pgtandem.apply_progress VALUES ('old', '0/1');
		INSERT INTO pgtandem.marker VALUES (1);
		UPDATE pgtandem.apply_progress SET commit_lsn = '0/2';
		TRUNCATE pgtandem.table_handoff;
		COMMIT`)
	txns := eventtest.ReadTxns(t, b.URL(), topic, 1, time.Minute)
	var got []string
	for _, ev := range txns[0].Changes {
		got = append(got, string(ev.Kind)+" "+ev.Schema+"."+ev.Table)
	}
	if len(got) != 1 || got[0] != "insert pgtandem.marker" || txns[0].Commit.Rows != 1 {
		t.Fatalf("published %v (commit rows %d), want only the marker insert", got, txns[0].Commit.Rows)
	}
}
