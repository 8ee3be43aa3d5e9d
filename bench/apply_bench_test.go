package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// pgbenchTarget starts a PostgreSQL 17 holding the same pgbench schema and
// initial data as the source (pgbench -i is deterministic), as a copy made
// before the backlog would.
func pgbenchTarget(b *testing.B) (*pglocal.Server, *pgx.Conn) {
	b.Helper()
	srv := pgtest.Start(b, 17)
	run(b, "pgbench", "-i", "-q", "-s", "1", srv.DSN("postgres"))
	conn := pgtest.Connect(b, srv, "postgres")
	sql(b, conn, `CREATE TABLE bench_end (done int PRIMARY KEY)`)
	return srv, conn
}

// waitDrained waits until the target holds the backlog's last transaction
// (pgbenchBacklog's bench_end row; both appliers keep the source's commit
// order, so everything before it is there too), then checks that it holds
// want pgbench_history rows.
func waitDrained(b *testing.B, conn *pgx.Conn, want int64, failed func() error) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Minute)
	for {
		var done bool
		if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM bench_end)`).Scan(&done); err != nil {
			b.Fatal(err)
		}
		if done {
			break
		}
		if err := failed(); err != nil {
			b.Fatal(err)
		}
		if time.Now().After(deadline) {
			b.Fatal("the backlog's last transaction is not on the target after 30 minutes")
		}
		// Not testwait.For: the end of this wait is the measured time, and
		// its 20 ms polls would blur it; the row is the fact waited for.
		time.Sleep(5 * time.Millisecond)
	}
	var n int64
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pgbench_history`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	if n != want {
		b.Fatalf("target holds %d of %d history rows once the last transaction arrived", n, want)
	}
}

// BenchmarkApplyDrain drains one pgbench backlog of PostgreSQL 15 into
// PostgreSQL 17 twice: with native logical replication (a subscription on a
// pre-created slot, copy_data = false) and with pg2broker → broker →
// broker2pg, and prints both times and their ratio (native / pgtandem; above
// 1 pgtandem is faster).
func BenchmarkApplyDrain(b *testing.B) {
	txns := benchTxns()
	srv := pgtest.Start(b, 15, pgtest.WithSetting("synchronous_commit", "off"))
	end := pgbenchBacklog(b, srv, txns, "bench_native", "pgtandem_bench")
	srcConn := pgtest.Connect(b, srv, "postgres")
	var history int64
	if err := srcConn.QueryRow(context.Background(), `SELECT count(*) FROM pgbench_history`).Scan(&history); err != nil {
		b.Fatal(err)
	}

	nativeSrv, nativeConn := pgbenchTarget(b)
	srcBefore, tgtBefore := serverCPU(b, srv), serverCPU(b, nativeSrv)
	start := time.Now()
	sql(b, nativeConn, fmt.Sprintf(`CREATE SUBSCRIPTION bench CONNECTION '%s' PUBLICATION pgtandem
		WITH (copy_data = false, create_slot = false, slot_name = 'bench_native')`, srv.DSN("postgres")))
	waitDrained(b, nativeConn, history, func() error { return nil })
	native := time.Since(start)
	nativeSrcCPU, nativeTgtCPU := serverCPU(b, srv)-srcBefore, serverCPU(b, nativeSrv)-tgtBefore
	sql(b, nativeConn, `ALTER SUBSCRIPTION bench DISABLE`)

	oursSrv, oursConn := pgbenchTarget(b)
	bk := brokertest.Start(b)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	topic := "persistent://public/default/bench-apply"
	capCfg := pg2broker.DefaultConfig()
	capCfg.Cluster, capCfg.DSN, capCfg.Topic, capCfg.PulsarURL = "bench", srv.DSN("postgres"), topic, bk.URL()
	appCfg := broker2pg.DefaultConfig()
	appCfg.Source, appCfg.Target, appCfg.TargetDSN, appCfg.Topic, appCfg.PulsarURL = "bench", "target", oursSrv.DSN("postgres"), topic, bk.URL()
	tel, err := telemetry.New("bench")
	if err != nil {
		b.Fatal(err)
	}
	capture, err := pg2broker.New(capCfg, log, tel)
	if err != nil {
		b.Fatal(err)
	}
	apply, err := broker2pg.New(appCfg, log, tel)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	stopProfile := profilePhase(b, "PGTANDEM_BENCH_PIPELINE_PROFILE")
	cpuBefore := cpuTime()
	srcBefore, tgtBefore = serverCPU(b, srv), serverCPU(b, oursSrv)
	start = time.Now()
	go func() { done <- capture.Run(ctx) }()
	go func() { done <- apply.Run(ctx) }()
	var captured time.Duration
	waitDrained(b, oursConn, history, func() error {
		if captured == 0 && capture.Confirmed() >= end {
			captured = time.Since(start)
		}
		select {
		case err := <-done:
			return fmt.Errorf("a service stopped: %v", err)
		default:
			return nil
		}
	})
	ours := time.Since(start)
	cpu := cpuTime() - cpuBefore
	oursSrcCPU, oursTgtCPU := serverCPU(b, srv)-srcBefore, serverCPU(b, oursSrv)-tgtBefore
	stopProfile()
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	// The same topic, now full, drained by broker2pg alone into a third
	// target through a subscription of its own: the apply's share.
	aloneSrv, aloneConn := pgbenchTarget(b)
	appCfg.Target, appCfg.TargetDSN = "alone", aloneSrv.DSN("postgres")
	alone, err := broker2pg.New(appCfg, log, tel)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	stopProfile = profilePhase(b, "PGTANDEM_BENCH_ALONE_PROFILE")
	cpuBefore = cpuTime()
	start = time.Now()
	go func() { done <- alone.Run(ctx) }()
	waitDrained(b, aloneConn, history, func() error { return nil })
	applyAlone := time.Since(start)
	aloneCPU := cpuTime() - cpuBefore
	stopProfile()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	for _, table := range []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"} {
		var a, n, o, l int64
		q := `SELECT coalesce(sum(hashtext(t::text)::bigint), 0) FROM ` + table + ` AS t`
		_ = srcConn.QueryRow(context.Background(), q).Scan(&a)
		_ = nativeConn.QueryRow(context.Background(), q).Scan(&n)
		_ = oursConn.QueryRow(context.Background(), q).Scan(&o)
		_ = aloneConn.QueryRow(context.Background(), q).Scan(&l)
		if a != n || a != o || a != l {
			b.Fatalf("%s differs: source %d, native %d, pgtandem %d, broker2pg alone %d", table, a, n, o, l)
		}
	}
	ratio := native.Seconds() / ours.Seconds()
	// pgbench's tpcb-like transaction changes 4 rows.
	perChange := float64(aloneCPU.Microseconds()) / float64(4*txns)
	b.ReportMetric(native.Seconds(), "native-s")
	b.ReportMetric(ours.Seconds(), "pgtandem-s")
	b.ReportMetric(ratio, "speedup")
	b.ReportMetric(applyAlone.Seconds(), "broker2pg-alone-s")
	b.ReportMetric(perChange, "apply-cpu-us/change")
	fmt.Printf("apply drain of %d pgbench transactions PG15 -> PG17: native logical replication %.2fs, pg2broker+broker+broker2pg %.2fs (capture alone done after %.2fs; %.0f txn/s; %.2fs CPU in process), speed ratio native/pgtandem %.2f (target >= 1.0, goal 2.0); broker2pg alone from the full topic %.2fs (ratio native/broker2pg %.2f; %.2f CPU-µs per change with the broker's delivery)\n",
		txns, native.Seconds(), ours.Seconds(), captured.Seconds(), float64(txns)/ours.Seconds(), cpu.Seconds(), ratio, applyAlone.Seconds(), native.Seconds()/applyAlone.Seconds(), perChange)
	fmt.Printf("CPU seconds used while draining: native: source cluster %.2f, target cluster %.2f; pgtandem: source cluster %.2f, pg2broker+broker+broker2pg %.2f, target cluster %.2f\n",
		nativeSrcCPU.Seconds(), nativeTgtCPU.Seconds(), oursSrcCPU.Seconds(), cpu.Seconds(), oursTgtCPU.Seconds())
}

// BenchmarkApplyLargeTxnRSS applies one 1,000,000-row transaction with the
// pgtandem binary and prints broker2pg's peak resident memory: a large
// transaction streams into the target transaction, it is not held.
func BenchmarkApplyLargeTxnRSS(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "pgtandem")
	run(b, "go", "build", "-o", bin, "../cmd/pgtandem")
	src := pgtest.Start(b, 15)
	dst := pgtest.Start(b, 17)
	bk := brokertest.Start(b)
	srcConn := pgtest.Connect(b, src, "postgres")
	dstConn := pgtest.Connect(b, dst, "postgres")
	for _, c := range []*pgx.Conn{srcConn, dstConn} {
		sql(b, c, `CREATE TABLE big (id int PRIMARY KEY, v text)`)
	}
	env := append(configEnv(), "PGTANDEM_CLUSTERS_SRC_DSN="+src.DSN("postgres"), "PGTANDEM_CLUSTERS_DST_DSN="+dst.DSN("postgres"),
		"PGTANDEM_PULSAR_URL="+bk.URL(), "PGTANDEM_CLUSTERS_SRC_TOPIC=persistent://public/default/bigtxn-apply", "PGTANDEM_LOG_LEVEL=warn")
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Stderr = env, os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	start("pg2broker", "--from", "src", "--create-slot")
	applyCmd := start("broker2pg", "--from", "src", "--to", "dst")
	servicetest.WaitSlotActive(b, srcConn, "pgtandem_src", 30*time.Second)
	began := time.Now()
	sql(b, srcConn, `INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1000000) g`)
	for {
		var n int64
		if err := dstConn.QueryRow(context.Background(), `SELECT count(*) FROM big`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n == 1000000 {
			break
		}
		if n != 0 {
			b.Fatalf("target shows %d rows of the transaction: not atomic", n)
		}
		if time.Since(began) > 15*time.Minute {
			b.Fatal("1M-row transaction not applied within 15 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	hwm := peakRSS(b, applyCmd.Process.Pid)
	_ = applyCmd.Process.Signal(syscall.SIGTERM)
	b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
	fmt.Printf("apply of one 1,000,000-row transaction: %.1fs from source commit start to target commit, broker2pg peak RSS %.0f MiB (target < 256)\n", time.Since(began).Seconds(), float64(hwm)/1024)
}

// profilePhase writes a CPU profile of one phase of a benchmark to the file
// named by the environment variable env, when it is set: the benchmark's own
// -cpuprofile would mix in the native run and the set-up.
func profilePhase(b *testing.B, env string) (stop func()) {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// configEnv is the environment without the benchmark's own PGTANDEM_BENCH_*
// switches, which the binary would refuse as unknown configuration keys.
func configEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGTANDEM_BENCH_") {
			env = append(env, kv)
		}
	}
	return env
}
