package bench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// benchTxns is the size of the pgbench backlog; PGTANDEM_BENCH_TXNS overrides it.
func benchTxns() int {
	if n, err := strconv.Atoi(os.Getenv("PGTANDEM_BENCH_TXNS")); err == nil && n > 0 {
		return n
	}
	return 100000
}

func run(b *testing.B, name string, args ...string) {
	b.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func sql(b *testing.B, conn *pgx.Conn, query string) {
	b.Helper()
	if _, err := conn.Exec(context.Background(), query); err != nil {
		b.Fatalf("%s: %v", query, err)
	}
}

// pgbenchBacklog fills srv with a pgbench backlog of txns transactions, both
// slots (one per contender) created before it, and returns the WAL position
// at its end.
func pgbenchBacklog(b *testing.B, srv *pglocal.Server, txns int, slots ...string) pglogrepl.LSN {
	b.Helper()
	conn := pgtest.Connect(b, srv, "postgres")
	run(b, "pgbench", "-i", "-q", "-s", "1", srv.DSN("postgres"))
	sql(b, conn, `ALTER TABLE pgbench_history REPLICA IDENTITY FULL`)
	sql(b, conn, `CREATE PUBLICATION pgtandem FOR ALL TABLES`)
	for _, slot := range slots {
		sql(b, conn, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, slot))
	}
	clients := 8
	run(b, "pgbench", "-n", "-c", strconv.Itoa(clients), "-j", "2", "-t", strconv.Itoa(txns/clients), srv.DSN("postgres"))
	// The backlog's last transaction: a drain is done when this row is on
	// the target, which a waiter reads for nearly nothing (counting
	// pgbench_history every few milliseconds would tax the target's CPU
	// while it is measured).
	sql(b, conn, `CREATE TABLE bench_end (done int PRIMARY KEY)`)
	sql(b, conn, `INSERT INTO bench_end VALUES (1)`)
	var end string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		b.Fatal(err)
	}
	lsn, _ := pglogrepl.ParseLSN(end)
	return lsn
}

// BenchmarkCaptureDrain drains the same pgbench backlog once with
// pg_recvlogical -P pgoutput into /dev/null and once with pg2broker into the
// project's broker (fsync per group commit), and prints both times.
func BenchmarkCaptureDrain(b *testing.B) {
	txns := benchTxns()
	srv := pgtest.Start(b, 15, pgtest.WithSetting("synchronous_commit", "off"))
	end := pgbenchBacklog(b, srv, txns, "bench_recvlogical", "pgtandem_bench")

	srcBefore := serverCPU(b, srv)
	start := time.Now()
	run(b, "/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", srv.DSN("postgres"), "--slot", "bench_recvlogical", "--start",
		"-P", "pgoutput", "-o", "proto_version=1", "-o", "publication_names=pgtandem", "-E", end.String(), "-f", "/dev/null", "--no-loop")
	native := time.Since(start)
	nativeSrcCPU := serverCPU(b, srv) - srcBefore

	bk := brokertest.Start(b)
	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL = "bench", srv.DSN("postgres"), "persistent://public/default/bench", bk.URL()
	tel, err := telemetry.New("bench")
	if err != nil {
		b.Fatal(err)
	}
	svc, err := pg2broker.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), tel)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopProfile := profilePhase(b, "PGTANDEM_BENCH_CAPTURE_PROFILE")
	cpuBefore := cpuTime()
	srcBefore = serverCPU(b, srv)
	start = time.Now()
	go func() { done <- svc.Run(ctx) }()
	for svc.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	startup := time.Since(start)
	for svc.Confirmed() < end {
		select {
		case err := <-done:
			b.Fatalf("pg2broker stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	ours := time.Since(start)
	cpu := cpuTime() - cpuBefore
	oursSrcCPU := serverCPU(b, srv) - srcBefore
	stopProfile()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	// pgbench's tpcb-like transaction changes 4 rows.
	changes := 4 * txns
	b.ReportMetric(native.Seconds(), "pg_recvlogical-s")
	b.ReportMetric(ours.Seconds(), "pg2broker-s")
	b.ReportMetric(native.Seconds()/ours.Seconds(), "speedup")
	b.ReportMetric(float64(cpu.Microseconds())/float64(changes), "cpu-us/change")
	fmt.Printf("capture drain of %d pgbench transactions: pg_recvlogical %.2fs, pg2broker %.2fs (of which %.2fs start-up; %.0f txn/s; %.2fs CPU with the broker: %.2f CPU-µs per change), speed ratio pg_recvlogical/pg2broker %.2f (target >= 1.2)\n",
		txns, native.Seconds(), ours.Seconds(), startup.Seconds(), float64(txns)/ours.Seconds(), cpu.Seconds(), float64(cpu.Microseconds())/float64(changes), native.Seconds()/ours.Seconds())
	fmt.Printf("CPU seconds of the source cluster (its walsender) while draining: for pg_recvlogical %.2f, for pg2broker %.2f\n", nativeSrcCPU.Seconds(), oursSrcCPU.Seconds())
	// The walsender decodes on one core, whatever reads from it: a drain
	// cannot take less wall time than its walsender's CPU time. When
	// pg_recvlogical's drain is as long as that, no consumer can pass
	// pg_recvlogical by more than what its own walsender saves.
	ceiling := native.Seconds() / oursSrcCPU.Seconds()
	b.ReportMetric(ceiling, "speedup-ceiling")
	fmt.Printf("walsender bound: the source cluster was busy %.0f%% of pg_recvlogical's drain; with the %.2f CPU-s pg2broker's walsender took, no pg2broker could reach a ratio above %.2f\n",
		100*nativeSrcCPU.Seconds()/native.Seconds(), oursSrcCPU.Seconds(), ceiling)
}

// BenchmarkCaptureLargeTxnRSS streams one 1,000,000-row transaction through
// the pgtandem binary and prints its peak resident memory: a large
// transaction must stream through, not be held.
func BenchmarkCaptureLargeTxnRSS(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "pgtandem")
	run(b, "go", "build", "-o", bin, "../cmd/pgtandem")
	srv := pgtest.Start(b, 15)
	bk := brokertest.Start(b)
	conn := pgtest.Connect(b, srv, "postgres")
	sql(b, conn, `CREATE TABLE big (id int PRIMARY KEY, v text)`)
	cmd := exec.Command(bin, "pg2broker", "--from", "src", "--create-slot")
	cmd.Env = append(os.Environ(), "PGTANDEM_CLUSTERS_SRC_DSN="+srv.DSN("postgres"), "PGTANDEM_PULSAR_URL="+bk.URL(),
		"PGTANDEM_CLUSTERS_SRC_TOPIC=persistent://public/default/bigtxn", "PGTANDEM_LOG_LEVEL=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	servicetest.WaitSlotActive(b, conn, "pgtandem_src", 30*time.Second)
	sql(b, conn, `INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1000000) g`)
	var end string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for {
		var confirmed string
		err := conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'pgtandem_src'`).Scan(&confirmed)
		c, _ := pglogrepl.ParseLSN(confirmed)
		e, _ := pglogrepl.ParseLSN(end)
		if err == nil && c >= e {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatal("1M-row transaction not confirmed within 10 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	hwm := peakRSS(b, cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
	fmt.Printf("capture of one 1,000,000-row transaction: %.1fs, pg2broker peak RSS %.0f MiB (target < 256)\n", time.Since(start).Seconds(), float64(hwm)/1024)
}

// cpuTime is the CPU time this process used so far (capture and broker).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS reads VmHWM (kB) of a process.
func peakRSS(b *testing.B, pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return kb
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

// serverCPU is the CPU time used so far by a server's postmaster and the
// processes it started (a walsender, an apply worker, a backend): with
// cpuTime, where a drain's CPU goes.
func serverCPU(b *testing.B, srv *pglocal.Server) time.Duration {
	b.Helper()
	cpu, err := srv.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}
