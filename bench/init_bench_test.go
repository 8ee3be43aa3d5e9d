package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/pgtest"
)

// BenchmarkInitCopy copies pgbench scale 10 from PostgreSQL 15 to 17 twice
// in one run: with native logical replication (CREATE SUBSCRIPTION ... WITH
// (copy_data = true), its schema pre-created with indexes, as it needs) and
// with pgtandem init (schema by itself, indexes built after the data).
// Target: pgtandem at most 1.0x native's time, goal 0.5x.
func BenchmarkInitCopy(b *testing.B) {
	src := pgtest.Start(b, 15, pgtest.WithSetting("max_worker_processes", "16"))
	run(b, "pgbench", "-i", "-q", "-s", "10", src.DSN("postgres"))
	run(b, "psql", "-q", "-d", src.DSN("postgres"), "-c", "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CREATE PUBLICATION native_pub FOR ALL TABLES")

	native := pgtest.Start(b, 17, pgtest.WithSetting("max_logical_replication_workers", "8"), pgtest.WithSetting("max_sync_workers_per_subscription", "4"))
	run(b, "bash", "-c", fmt.Sprintf("pg_dump --schema-only -d '%s' | psql -q -d '%s'", src.DSN("postgres"), native.DSN("postgres")))
	conn := pgtest.Connect(b, native, "postgres")
	start := time.Now()
	sql(b, conn, fmt.Sprintf(`CREATE SUBSCRIPTION native_sub CONNECTION '%s' PUBLICATION native_pub WITH (copy_data = true)`, src.DSN("postgres")))
	for {
		var pending int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'`).Scan(&pending); err != nil {
			b.Fatal(err)
		}
		if pending == 0 {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatal("native initial copy did not finish in 10 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	nativeTook := time.Since(start)
	sql(b, conn, `ALTER SUBSCRIPTION native_sub DISABLE; ALTER SUBSCRIPTION native_sub SET (slot_name = NONE); DROP SUBSCRIPTION native_sub`)
	sql(b, pgtest.Connect(b, src, "postgres"), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'native_sub%' OR slot_name LIKE 'pg_%'`)

	target := pgtest.Start(b, 17)
	cfg := bootstrap.Config{Source: "old", SourceDSN: src.DSN("postgres"), TargetDSN: target.DSN("postgres"),
		Topic: "persistent://public/default/initbench", Jobs: 2, SplitRows: 250000}
	start = time.Now()
	res, err := bootstrap.Copy(context.Background(), cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		b.Fatal(err)
	}
	ours := time.Since(start)
	var rows int64
	for _, t := range res.Tables {
		rows += t.Rows
	}
	b.ReportMetric(nativeTook.Seconds(), "native-s")
	b.ReportMetric(ours.Seconds(), "init-s")
	b.ReportMetric(ours.Seconds()/nativeTook.Seconds(), "ratio")
	fmt.Printf("initial copy of pgbench scale 10 (%d rows) PG 15 -> 17: native subscription %.2fs, pgtandem init %.2fs, ratio %.2f (target <= 1.0, goal 0.5)\n",
		rows, nativeTook.Seconds(), ours.Seconds(), ours.Seconds()/nativeTook.Seconds())
}
