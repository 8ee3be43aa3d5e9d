package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/tandemtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// The load of TestSwitchUnderPgbench: swRate client transactions a second
// over swClients PgBouncer connections for swDuration, long enough for
// swPhaseRows transactions on old, then as many on new, then the rest on
// old again.
const (
	swRate      = 200
	swClients   = 8
	swDuration  = 40 * time.Second
	swPhaseRows = 2000
)

// TestSwitchUnderPgbench is the acceptance of pgtandem switch: Debian's
// pgbench writes through PgBouncer (transaction pooling) at a fixed rate
// while the binary switches clients from old to new and, later, back. No
// client transaction may fail; every one is on both clusters at the end,
// once; every sequence is handed over exactly, which the gap-free ids
// prove: each phase's rows continue the previous phase's ids.
func TestSwitchUnderPgbench(t *testing.T) {
	for _, pair := range []struct {
		name     string
		old, new int
	}{{"15_to_17", 15, 17}, {"17_to_18", 17, 18}} {
		t.Run(pair.name, func(t *testing.T) { swUnderPgbench(t, pair.old, pair.new) })
	}
}

// swRun is one run of the acceptance: what it started and what it saw.
type swRun struct {
	td         *tandemtest.Tandem
	config     string
	old, new   *swWatcher
	benchStart time.Time
	benchEnd   time.Time
	res        *tandemtest.PgbenchResult
	// forward is the switch from old to new, rollback the one back.
	forward, rollback switchover.Report
	// fresh are the sequences before the load; atForward old's once
	// switched to new, atRollback new's once switched back (each the
	// fenced source's, which no client writes to any more).
	fresh, atForward, atRollback map[string]string
}

func swUnderPgbench(t *testing.T, oldMajor, newMajor int) {
	r := &swRun{td: tandemtest.Start(t, oldMajor, newMajor)}
	r.config = r.td.ConfigFile(t, t.TempDir())
	r.old, r.new = swWatch(t, r.td.Old), swWatch(t, r.td.New)
	r.fresh = swFreshSequences(t, r.td)

	bench := tandemtest.StartPgbench(t, r.td.Bouncer.DSN(tandemtest.Database), swRate, swClients, swDuration)
	r.benchStart = time.Now()
	swWaitRows(t, r.old, 0, swPhaseRows)
	r.forward = swRunSwitch(t, r.config, "old", "new")
	r.atForward = tandemtest.Sequences(t, r.td.Old)
	onNew, err := r.new.count("ev_big")
	if err != nil {
		t.Fatal(err)
	}
	swWaitRows(t, r.new, onNew, swPhaseRows)
	r.rollback = swRunSwitch(t, r.config, "new", "old")
	r.atRollback = tandemtest.Sequences(t, r.td.New)
	r.res = bench.Wait(t)
	r.benchEnd = time.Now()

	r.checkPgbench(t)
	r.logLatencies(t)
	swCheckCaughtUp(t, r.forward)
	swCheckCaughtUp(t, r.rollback)
	swCheckBouncerOnOld(t, r.td.Bouncer.AdminDSN(), r.td.Old.Port)
	r.checkRows(t)
	r.checkSequences(t)
	r.checkPhases(t)
}

// checkPgbench fails the test unless pgbench ran every transaction it
// scheduled, none failed, and enough of them ran after the rollback.
func (r *swRun) checkPgbench(t *testing.T) {
	t.Helper()
	res := r.res
	if res.ExitCode != 0 || res.Failed != 0 {
		t.Fatalf("pgbench: exit code %d, %d failed client transactions\n%s", res.ExitCode, res.Failed, res.Output)
	}
	for _, x := range res.Txns {
		if x.Failed {
			t.Fatalf("pgbench logged a failed transaction ending at %s\n%s", swClock(x.End), res.Output)
		}
	}
	if want := int(float64(swRate) * swDuration.Seconds() * 0.9); res.Processed < want || len(res.Txns) != res.Processed {
		t.Fatalf("pgbench processed %d transactions (%d logged), want at least %d (%d/s for %s)\n%s",
			res.Processed, len(res.Txns), want, swRate, swDuration, res.Output)
	}
	if left := r.benchEnd.Sub(r.rollback.PauseEnd); left < swDuration/5 {
		t.Fatalf("the rollback ended %s before pgbench: too little load after it; lengthen swDuration", left.Round(time.Millisecond))
	}
}

// logLatencies prints the pause of each switch and the longest client
// transaction around it, beside the longest away from both.
func (r *swRun) logLatencies(t *testing.T) {
	around := func(rep switchover.Report) (time.Time, time.Time) {
		return rep.PauseStart.Add(-time.Second), rep.PauseEnd.Add(time.Second)
	}
	for _, sw := range []struct {
		name string
		rep  switchover.Report
	}{{"switch old -> new", r.forward}, {"rollback new -> old", r.rollback}} {
		longest, at := r.res.MaxLatency(around(sw.rep))
		t.Logf("%s at +%.1f s of load: write pause %s, longest client transaction %s (started %+d ms from the fence), %d sessions terminated",
			sw.name, sw.rep.PauseStart.Sub(r.benchStart).Seconds(), swMs(sw.rep.Pause), swMs(longest), at.Sub(sw.rep.PauseStart).Milliseconds(), sw.rep.Terminated)
	}
	var calm time.Duration
	for _, x := range r.res.Txns {
		near := false
		for _, rep := range []switchover.Report{r.forward, r.rollback} {
			from, to := around(rep)
			near = near || (!x.End.Before(from) && !x.Start.After(to))
		}
		if !near {
			calm = max(calm, x.Latency())
		}
	}
	t.Logf("%d client transactions, the longest away from the switches %s (what the shared machine alone costs)", r.res.Processed, swMs(calm))
}

// checkRows waits until both clusters hold every client transaction, the
// last ones carried to new by the forward flow and those written on new
// carried to old by the reverse one, then checks that each is there once
// and that pgtandem verify finds both equal.
func (r *swRun) checkRows(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	n := int64(r.res.Processed)
	for _, w := range []*swWatcher{r.old, r.new} {
		testwait.For(t, 2*time.Minute, "every client transaction on "+w.name, func() error {
			for _, table := range []string{"ev_big", "ev_ident"} {
				if got, err := w.count(table); err != nil || got != n {
					return fmt.Errorf("%s has %d rows (%v), pgbench processed %d transactions", table, got, err, n)
				}
			}
			return nil
		})
		// Each client transaction inserted one row in each event table and
		// added 1 to one balance.
		for _, table := range []string{"ev_big", "ev_ident"} {
			var rows, distinct, lo, hi int64
			err := w.conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT id), min(id), max(id) FROM `+table).Scan(&rows, &distinct, &lo, &hi)
			if err != nil {
				t.Fatal(err)
			}
			if rows != n || distinct != n || lo != 1 || hi != n {
				t.Fatalf("%s on %s: %d rows, %d distinct ids from %d to %d; want ids 1 to %d, each once", table, w.name, rows, distinct, lo, hi, n)
			}
		}
		var balance int64
		if err := w.conn.QueryRow(ctx, `SELECT sum(balance) FROM acct`).Scan(&balance); err != nil {
			t.Fatal(err)
		}
		if balance != n {
			t.Fatalf("acct on %s: balances add up to %d, want %d (one per client transaction)", w.name, balance, n)
		}
	}
	for _, srv := range []*pglocal.Server{r.td.Old, r.td.New} {
		log, err := os.ReadFile(srv.LogFile)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(log, []byte("duplicate key")); i >= 0 {
			t.Fatalf("PostgreSQL %d logged a duplicate key: %s", srv.Major, log[i:min(len(log), i+300)])
		}
	}
	verify := exec.Command(pgtandemBin, "verify", "--config", r.config, "--from", "old", "--to", "new")
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("pgtandem verify --from old --to new: %v\n%s", err, out)
	}
}

// checkSequences: each client transaction called each of the load's four
// sequences once, so a cluster's values are its count of transactions
// since the fresh start when every switch set the target exactly to the
// source's values. New's stayed where the rollback read them: new took no
// client write after its fence.
func (r *swRun) checkSequences(t *testing.T) {
	t.Helper()
	n := int64(r.res.Processed)
	n1, n2 := swSeqValue(t, r.atForward, "public.ev_big_id_seq"), swSeqValue(t, r.atRollback, "public.ev_big_id_seq")
	if n1 <= 0 || n2 <= n1 || n <= n2 {
		t.Fatalf("ev_big ids: %d written on old, then up to %d on new, then up to %d on old: a phase wrote nothing", n1, n2, n)
	}
	if want := swSequencesAfter(r.fresh, n1); !maps.Equal(r.atForward, want) {
		t.Fatalf("old's sequences when switched to new: %v, want %v", r.atForward, want)
	}
	if want := swSequencesAfter(r.fresh, n2); !maps.Equal(r.atRollback, want) {
		t.Fatalf("new's sequences when switched back to old: %v, want %v", r.atRollback, want)
	}
	if got := tandemtest.Sequences(t, r.td.New); !maps.Equal(got, r.atRollback) {
		t.Fatalf("new's sequences moved after it was fenced: %v, were %v at the rollback", got, r.atRollback)
	}
	if got, want := tandemtest.Sequences(t, r.td.Old), swSequencesAfter(r.fresh, n); !maps.Equal(got, want) {
		t.Fatalf("old's sequences at the end: %v, want %v", got, want)
	}
}

// checkPhases checks that each phase's ids were written while its cluster
// took the writes: the now() of their transactions lies between the
// switches. The rows written on new are on old, brought by the reverse
// flow.
func (r *swRun) checkPhases(t *testing.T) {
	t.Helper()
	n1, n2 := swSeqValue(t, r.atForward, "public.ev_big_id_seq"), swSeqValue(t, r.atRollback, "public.ev_big_id_seq")
	for _, phase := range []struct {
		what          string
		from, to      int64
		after, before time.Time
	}{
		{"on old before the switch", 0, n1, r.benchStart.Add(-time.Second), swStep(t, r.forward, switchover.StepFence).End},
		{"on new", n1, n2, swStep(t, r.forward, switchover.StepResume).Start, swStep(t, r.rollback, switchover.StepFence).End},
		{"on old after the rollback", n2, int64(r.res.Processed), swStep(t, r.rollback, switchover.StepResume).Start, r.benchEnd},
	} {
		var rows int64
		var first, last time.Time
		err := r.old.conn.QueryRow(context.Background(), `SELECT count(*), min(at), max(at) FROM ev_big WHERE id > $1 AND id <= $2`,
			phase.from, phase.to).Scan(&rows, &first, &last)
		if err != nil {
			t.Fatal(err)
		}
		if rows != phase.to-phase.from || first.Before(phase.after) || last.After(phase.before) {
			t.Fatalf("ev_big ids %d to %d, written %s, on old: %d rows from %s to %s; want %d rows written between %s and %s",
				phase.from+1, phase.to, phase.what, rows, swClock(first), swClock(last), phase.to-phase.from, swClock(phase.after), swClock(phase.before))
		}
		t.Logf("%d client transactions %s", rows, phase.what)
	}
}

// swFreshSequences returns the sequences before the load, the same on
// both clusters, the load's four not called yet.
func swFreshSequences(t *testing.T, td *tandemtest.Tandem) map[string]string {
	t.Helper()
	fresh := tandemtest.Sequences(t, td.Old)
	for name, v := range map[string]string{"public.desc_seq": "-1/false", "public.ev_big_id_seq": "1/false",
		"public.ev_ident_id_seq": "1/false", "public.standalone_seq": "1/false"} {
		if fresh[name] != v {
			t.Fatalf("sequence %s before the load: %q, want %q", name, fresh[name], v)
		}
	}
	if got := tandemtest.Sequences(t, td.New); !maps.Equal(got, fresh) {
		t.Fatalf("sequences before the load: %v on new, %v on old", got, fresh)
	}
	return fresh
}

// swSequencesAfter is what tandemtest.Sequences shows once n client
// transactions ran PgbenchScript from the sequences fresh.
func swSequencesAfter(fresh map[string]string, n int64) map[string]string {
	out := maps.Clone(fresh)
	for _, name := range []string{"public.ev_big_id_seq", "public.ev_ident_id_seq", "public.standalone_seq"} {
		out[name] = fmt.Sprintf("%d/true", n)
	}
	out["public.desc_seq"] = fmt.Sprintf("%d/true", -n)
	return out
}

// swSeqValue is the last_value of sequence name in seqs.
func swSeqValue(t *testing.T, seqs map[string]string, name string) int64 {
	t.Helper()
	value, _, _ := strings.Cut(seqs[name], "/")
	v, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		t.Fatalf("sequence %s: %q in %v", name, seqs[name], seqs)
	}
	return v
}

// swRunSwitch runs pgtandem switch with --json and returns its report,
// failing the test unless the switch is done.
func swRunSwitch(t *testing.T, config, from, to string, args ...string) switchover.Report {
	t.Helper()
	cmd := exec.Command(pgtandemBin, append([]string{"switch", "--config", config, "--from", from, "--to", to, "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pgtandem switch --from %s --to %s: %v\nstdout:\n%s\nstderr:\n%s", from, to, err, stdout.String(), stderr.String())
	}
	var rep switchover.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("pgtandem switch --from %s --to %s --json: %v\n%s", from, to, err, stdout.String())
	}
	// Pause was measured on the monotonic clock, PauseStart and PauseEnd
	// are wall-clock times.
	if rep.Outcome != switchover.OutcomeDone || rep.From != from || rep.To != to || rep.PauseStart.IsZero() ||
		!rep.PauseEnd.After(rep.PauseStart) || (rep.Pause-rep.PauseEnd.Sub(rep.PauseStart)).Abs() > time.Millisecond {
		t.Fatalf("pgtandem switch --from %s --to %s: report %+v", from, to, rep)
	}
	return rep
}

// swCheckCaughtUp fails the test unless the switch saw PgBouncer's queue
// empty after the RESUME, and only then did the rest of its work.
func swCheckCaughtUp(t *testing.T, rep switchover.Report) {
	t.Helper()
	if rep.CaughtUp <= 0 || rep.CatchUpError != "" {
		t.Fatalf("switch %s from %s to %s: clients not seen caught up after the RESUME: %s (caught up %s)", rep.SwitchID, rep.From, rep.To, rep.CatchUpError, rep.CaughtUp)
	}
	// CaughtUp was measured on the monotonic clock, the rest on the wall clock.
	if cursor, caughtUp := swStep(t, rep, switchover.StepCursor).Start, rep.PauseEnd.Add(rep.CaughtUp); cursor.Before(caughtUp.Add(-time.Millisecond)) {
		t.Fatalf("switch %s: cursor step started at %s, before clients caught up at %s", rep.SwitchID, swClock(cursor), swClock(caughtUp))
	}
	t.Logf("switch %s -> %s: clients caught up %s after the RESUME", rep.From, rep.To, swMs(rep.CaughtUp))
}

func swStep(t *testing.T, rep switchover.Report, step string) switchover.StepTiming {
	t.Helper()
	for _, s := range rep.Steps {
		if s.Step == step {
			return s
		}
	}
	t.Fatalf("switch %s from %s to %s: no step %s in %+v", rep.SwitchID, rep.From, rep.To, step, rep.Steps)
	return switchover.StepTiming{}
}

// swWatcher reads one cluster for the test. The database fence of a switch
// terminates its connection, like any client's; the next read opens another.
type swWatcher struct {
	name string
	dsn  string
	conn *pgx.Conn
}

func swWatch(t *testing.T, srv *pglocal.Server) *swWatcher {
	w := &swWatcher{name: fmt.Sprintf("PostgreSQL %d", srv.Major), dsn: srv.DSN(tandemtest.Database)}
	t.Cleanup(func() {
		if w.conn != nil {
			_ = w.conn.Close(context.Background())
		}
	})
	return w
}

func (w *swWatcher) count(table string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if w.conn == nil {
		conn, err := pgx.Connect(ctx, w.dsn)
		if err != nil {
			return 0, err
		}
		w.conn = conn
	}
	var n int64
	err := w.conn.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n)
	if err != nil {
		_ = w.conn.Close(ctx)
		w.conn = nil
	}
	return n, err
}

// swWaitRows waits until ev_big on w has rows more rows than from: the
// clients wrote that much on the cluster that takes the writes.
func swWaitRows(t *testing.T, w *swWatcher, from, rows int64) {
	t.Helper()
	testwait.For(t, time.Minute, fmt.Sprintf("%d more rows in ev_big on %s", rows, w.name), func() error {
		n, err := w.count("ev_big")
		if err == nil && n < from+rows {
			err = fmt.Errorf("%d rows", n)
		}
		return err
	})
}

// swCheckBouncerOnOld fails the test unless PgBouncer's database leads to
// old's port and is not paused.
func swCheckBouncerOnOld(t *testing.T, adminDSN string, oldPort int) {
	t.Helper()
	b, err := switchover.NewPgBouncer(adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.Database(context.Background(), tandemtest.Database)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil {
		t.Fatalf("PgBouncer has no database %s", tandemtest.Database)
	}
	if d.Port != oldPort || d.Paused {
		t.Fatalf("PgBouncer database %s after the rollback: %+v, want port %d (old), not paused", d.Name, *d, oldPort)
	}
}

func swMs(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func swClock(at time.Time) string { return at.Format("15:04:05.000000") }
