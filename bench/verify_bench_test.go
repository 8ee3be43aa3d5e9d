package bench

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/verify"
)

// BenchmarkVerify compares pgbench scale 10 on PostgreSQL 15 and 17 with
// pgtandem verify and with the naive way, `COPY (SELECT ... ORDER BY key) TO
// STDOUT | md5sum` of every table on both sides at once, and prints both
// times. Target: verify takes at most half the naive time.
func BenchmarkVerify(b *testing.B) {
	src := pgtest.Start(b, 15)
	dst := pgtest.Start(b, 17)
	for _, srv := range []string{src.DSN("postgres"), dst.DSN("postgres")} {
		run(b, "pgbench", "-i", "-q", "-s", "10", srv)
		run(b, "psql", "-q", "-d", srv, "-c", "ANALYZE")
	}
	tables := map[string]string{
		"pgbench_accounts": "aid", "pgbench_branches": "bid", "pgbench_tellers": "tid",
		"pgbench_history": "tid, bid, aid, delta, mtime, filler",
	}

	start := time.Now()
	var sums [2]map[string]string
	var wg sync.WaitGroup
	for side, dsn := range []string{src.DSN("postgres"), dst.DSN("postgres")} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[side] = map[string]string{}
			for table, key := range tables {
				out, err := exec.Command("bash", "-c", fmt.Sprintf(`psql -q -d '%s' -c "COPY (SELECT * FROM %s ORDER BY %s) TO STDOUT" | md5sum`, dsn, table, key)).Output()
				if err != nil {
					b.Error(err)
					return
				}
				sums[side][table] = string(out)
			}
		}()
	}
	wg.Wait()
	naive := time.Since(start)
	for table := range tables {
		if sums[0][table] != sums[1][table] {
			b.Fatalf("naive comparison finds %s different", table)
		}
	}

	cfg := verify.DefaultConfig()
	cfg.SourceDSN, cfg.TargetDSN, cfg.Jobs = src.DSN("postgres"), dst.DSN("postgres"), 2
	start = time.Now()
	report, err := verify.Run(context.Background(), cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ours := time.Since(start)
	if !report.Equal() {
		b.Fatalf("verify finds differences: %+v", report.Schema)
	}
	b.ReportMetric(naive.Seconds(), "naive-s")
	b.ReportMetric(ours.Seconds(), "verify-s")
	b.ReportMetric(ours.Seconds()/naive.Seconds(), "ratio")
	fmt.Printf("verify of pgbench scale 10 (1M accounts), PG 15 vs 17: naive COPY|md5sum %.2fs, pgtandem verify %.2fs, ratio %.2f (target <= 0.5)\n",
		naive.Seconds(), ours.Seconds(), ours.Seconds()/naive.Seconds())
}
