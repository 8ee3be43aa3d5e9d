package bench

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pgbouncertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/tandemtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
	switchover "github.com/pgtandem/pgtandem/switch"
)

const (
	// switchRate and switchClients are the client load during every switch.
	switchRate    = 500
	switchClients = 16
	// switches is how many switches each contender makes.
	switches = 10
	// switchEvery is how many client transactions run between two switches.
	switchEvery = 1000
	// pgtandemLoad and nativeLoad are how long each pgbench runs: pgbench
	// stops only at its end, so each has some margin over its switches
	// (pgtandemLoad is for half of them, see BenchmarkSwitchPause).
	pgtandemLoad = 40 * time.Second
	nativeLoad   = 60 * time.Second
	// nativeDatabase holds the native baseline on both clusters, beside the
	// database pgtandem keeps in tandem.
	nativeDatabase = "native"
	// nativePoll is how often the native script looks at the apply's
	// position: the interval at which pgtandem looks for its marker.
	nativePoll = 2 * time.Millisecond
	// poolSize is default_pool_size of both contenders' PgBouncer: the
	// most server connections it holds, each of which a PAUSE ends. It is
	// several times what the load keeps busy on average (500 TPS of 2-5 ms
	// transactions: 1-2.5), and a generous pool for a 2-core server, where
	// PgBouncer's default of 20 let pgbench's start-up burst open 15.
	//
	// The size matters on this machine because ending a backend costs it
	// 27-35 ms of CPU on PostgreSQL 15 and 16-18 ms on 17 (starting one,
	// 3 ms): each PAUSE ended 9-15 backends at once, a burst of up to half
	// a second of CPU on 2 cores at the start of the pause, which slowed
	// every hop of pgtandem's marker (through four processes) more than
	// the native apply's (two). Over six runs of each, with 20 and with 8,
	// the longest pause as the tools timed it went from 161-230 ms to
	// 107-144 ms for pgtandem and was 103-179 and 102-148 ms for native;
	// clients' longest wait went from 279-427 to 218-294 ms for pgtandem
	// and was 217-307 and 216-315 ms for native.
	poolSize = "8"
)

// pause is one switch's write pause: from PAUSE to the end of RESUME as the
// tool timed it, and what clients saw of it.
type pause struct {
	start, end time.Time
	// client is the longest wait of a client transaction that overlapped
	// the pause, schedule lag included; before is the longest of those that
	// ran in the second before the PAUSE: what the loaded machine makes
	// clients wait without a switch.
	client, before time.Duration
	// applyWait is the part the native script spent waiting for the
	// subscription to apply old's last write.
	applyWait time.Duration
	// caughtUp is how long after the RESUME no client waited in PgBouncer
	// any more, as pgtandem's report gives it; the native script waits for
	// it the same way, so that both put the same load on PgBouncer.
	caughtUp time.Duration
	// steps is pgtandem's timeline of the switch.
	steps string
}

func (p pause) reported() time.Duration { return p.end.Sub(p.start) }

// BenchmarkSwitchPause switches clients through PgBouncer between
// PostgreSQL 15 and 17 under pgbench at a fixed rate: 10 times back and
// forth with pgtandem switch, and 10 times forward with a scripted switch
// over native logical replication, on the same servers in a database of
// its own. It prints the longest client-visible pause of each and their
// ratio (pgtandem / native; below 1 pgtandem pauses clients for less).
//
// pgtandem makes half of its switches before the native ones and half
// after, so that a machine that gets faster or slower during the run (as
// after the benchmarks before this one in make bench) favours neither.
func BenchmarkSwitchPause(b *testing.B) {
	td := tandemtest.Start(b, 15, 17, tandemtest.Options{BouncerSettings: map[string]string{"default_pool_size": poolSize}})
	// Created before any switch fences new's database postgres, which
	// would make this session read-only.
	for _, srv := range []*pglocal.Server{td.Old, td.New} {
		pgtest.Exec(b, srv, tandemtest.Database, `CREATE DATABASE `+nativeDatabase)
		pgtest.Exec(b, srv, nativeDatabase, tandemtest.Schema)
	}
	ours := pgtandemPauses(b, td, 0, switches/2)
	theirs, aborted := startNative(b, td).pauses(b)
	ours = append(ours, pgtandemPauses(b, td, switches/2, switches-switches/2)...)

	client := func(p pause) time.Duration { return p.client }
	before := func(p pause) time.Duration { return p.before }
	oursMax, oursMedian := maxMedian(ours, client)
	reportedMax, _ := maxMedian(ours, pause.reported)
	_, oursBefore := maxMedian(ours, before)
	nativeMax, nativeMedian := maxMedian(theirs, client)
	_, nativeBefore := maxMedian(theirs, before)
	ratio := oursMax.Seconds() / nativeMax.Seconds()
	b.ReportMetric(float64(oursMax.Milliseconds()), "pgtandem-max-pause-ms")
	b.ReportMetric(float64(oursMedian.Milliseconds()), "pgtandem-median-pause-ms")
	b.ReportMetric(float64(reportedMax.Milliseconds()), "pgtandem-report-max-pause-ms")
	b.ReportMetric(float64(nativeMax.Milliseconds()), "native-max-pause-ms")
	b.ReportMetric(ratio, "pgtandem/native")
	note := ""
	if aborted != "" {
		note = "; native baseline degraded: " + aborted
	}
	fmt.Printf("switch pause at %d TPS over %d switches PG15<->PG17 (PgBouncer pool of %s): pgtandem max %d ms (median %d ms; report pause max %d ms), native scripted max %d ms (median %d ms), ratio pgtandem/native %.2f (target <= 1.5 and <= 1 s, aim 300 ms); longest client wait in the second before a PAUSE, median: pgtandem %d ms, native %d ms%s\n",
		switchRate, switches, poolSize, oursMax.Milliseconds(), oursMedian.Milliseconds(), reportedMax.Milliseconds(),
		nativeMax.Milliseconds(), nativeMedian.Milliseconds(), ratio, oursBefore.Milliseconds(), nativeBefore.Milliseconds(), note)
}

// pgtandemPauses makes n of the switches old → new → old … with pgtandem
// under a load of its own, after the done ones made before, each once
// clients have written switchEvery transactions since the one before.
func pgtandemPauses(b *testing.B, td *tandemtest.Tandem, done, n int) []pause {
	b.Helper()
	ctx := context.Background()
	dsn := map[string]string{"old": td.Old.DSN(tandemtest.Database), "new": td.New.DSN(tandemtest.Database)}
	began := time.Now()
	load := tandemtest.StartPgbench(b, td.Bouncer.DSN(tandemtest.Database), switchRate, switchClients, pgtandemLoad)
	pauses := make([]pause, 0, n)
	from, to := "old", "new"
	if done%2 == 1 {
		from, to = to, from
	}
	if done == 0 {
		// The runbook's window runs a dry run before the switch: it
		// carries a marker both ways and reads what the switch reads, so
		// the reverse flow's first apply is not inside the first measured
		// switch.
		waitForWrites(b, dsn[from], switchEvery)
		if _, err := switchover.DryRun(ctx, td.SwitchConfig(from), td.SwitchOptions(b), servicetest.Logger()); err != nil {
			b.Fatalf("pgtandem switch --dry-run: %v", err)
		}
	}
	for i := done; i < done+n; i++ {
		waitForWrites(b, dsn[from], switchEvery)
		rep, err := switchover.Run(ctx, td.SwitchConfig(from), td.SwitchOptions(b), servicetest.Logger())
		if err != nil {
			b.Fatalf("pgtandem switch %d from %s to %s: %v", i+1, from, to, err)
		}
		steps := []string{fmt.Sprintf("preflight probes forward/reverse %d/%d", rep.ForwardProbe.Milliseconds(), rep.ReverseProbe.Milliseconds())}
		for _, s := range rep.Steps {
			step := fmt.Sprintf("%s %d", s.Step, s.End.Sub(s.Start).Milliseconds())
			if s.Step == switchover.StepFence {
				step += " (" + s.Detail + ")"
			}
			steps = append(steps, step)
		}
		steps = append(steps, fmt.Sprintf("caught up %d after the RESUME%s", rep.CaughtUp.Milliseconds(), rep.CatchUpError))
		pauses = append(pauses, pause{start: rep.PauseStart, end: rep.PauseEnd, steps: strings.Join(steps, ", ")})
		from, to = to, from
	}
	switched := time.Since(began)
	res := load.Wait(b)
	if res.ExitCode != 0 || res.Failed != 0 {
		b.Errorf("pgtandem: pgbench exited with code %d, %d failed transactions:\n%s", res.ExitCode, res.Failed, res.Output)
	}
	clientPauses(res, pauses)
	var timelines []string
	for i, p := range pauses {
		timelines = append(timelines, fmt.Sprintf("%d: %s", done+i+1, p.steps))
	}
	b.Logf("pgtandem, switches %d-%d in %.0f s of a %.0f s load (%s); pause ms as reported/as clients saw it: %s; ms per step of each switch (odd ones old -> new; one line: testing keeps 10 lines of a benchmark's log): %s",
		done+1, done+n, switched.Seconds(), pgtandemLoad.Seconds(), pgbenchSummary(res), pauseList(pauses, nil), strings.Join(timelines, " | "))
	return pauses
}

// clientPauses fills each pause's client-visible figures.
func clientPauses(res *tandemtest.PgbenchResult, pauses []pause) {
	for i, p := range pauses {
		pauses[i].client, _ = res.MaxLatency(p.start, p.end)
		// Up to 100 ms before the PAUSE a transaction may be one the PAUSE
		// waits for.
		pauses[i].before, _ = res.MaxLatency(p.start.Add(-time.Second), p.start.Add(-100*time.Millisecond))
	}
}

// pauseList formats pauses as reported/client-visible milliseconds, with
// extra's figure after each when given.
func pauseList(pauses []pause, extra func(pause) time.Duration) string {
	var parts []string
	for _, p := range pauses {
		part := fmt.Sprintf("%d/%d", p.reported().Milliseconds(), p.client.Milliseconds())
		if extra != nil {
			part += fmt.Sprintf("/%d", extra(p).Milliseconds())
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, " ")
}

// firstError is the first error pgbench printed.
func firstError(output string) string {
	for line := range strings.Lines(output) {
		if _, msg, ok := strings.Cut(line, "error: "); ok {
			return strings.TrimSpace(msg)
		}
	}
	return "no error printed"
}

var (
	tpsRE = regexp.MustCompile(`tps = ([0-9.]+)`)
	lagRE = regexp.MustCompile(`rate limit schedule lag: avg ([0-9.]+) \(max ([0-9.]+)\) ms`)
)

// pgbenchSummary is pgbench's rate and schedule lag: how far the machine
// kept up with the load besides the switches.
func pgbenchSummary(res *tandemtest.PgbenchResult) string {
	tps, lag := tpsRE.FindStringSubmatch(res.Output), lagRE.FindStringSubmatch(res.Output)
	if tps == nil || lag == nil {
		return "no pgbench summary"
	}
	return fmt.Sprintf("pgbench %s TPS, schedule lag avg %s ms, max %s ms", tps[1], lag[1], lag[2])
}

// waitForWrites waits until clients have inserted n rows into ev_big on the
// cluster at dsn, by its sequence: a fact, where a sleep would make the
// number of transactions between switches depend on the machine. It
// connects anew each time, since pgtandem's database fence terminates the
// sessions of the cluster it leaves.
func waitForWrites(b *testing.B, dsn string, n int64) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	written := func() (int64, error) {
		var v int64
		err := conn.QueryRow(ctx, `SELECT last_value FROM ev_big_id_seq`).Scan(&v)
		return v, err
	}
	from, err := written()
	if err != nil {
		b.Fatal(err)
	}
	testwait.For(b, 30*time.Second, fmt.Sprintf("%d transactions on %s (did pgbench end before the switches?)", n, dsn), func() error {
		now, err := written()
		if err == nil && now < from+n {
			err = fmt.Errorf("clients wrote %d", now-from)
		}
		return err
	})
}

// nativeSwitch is the baseline: native logical replication from old's
// database native to new's, a PgBouncer of its own in front, and the
// script's own sessions on both sides.
type nativeSwitch struct {
	old, new       *pgx.Conn
	oldDSN, newDSN string
	bouncer        *pgbouncertest.Bouncer
	console        *switchover.PgBouncer
	oldEntry       switchover.DatabaseEntry
	newEntry       switchover.DatabaseEntry
	loginRetry     string
	sequences      []string
}

// startNative publishes old's tables and subscribes new to them without a
// copy (both hold the same rows already), and puts a PgBouncer in front of
// old.
func startNative(b *testing.B, td *tandemtest.Tandem) *nativeSwitch {
	b.Helper()
	ctx := context.Background()
	n := &nativeSwitch{
		old: pgtest.Connect(b, td.Old, nativeDatabase), new: pgtest.Connect(b, td.New, nativeDatabase),
		oldDSN: td.Old.DSN(nativeDatabase), newDSN: td.New.DSN(nativeDatabase),
		oldEntry: switchover.DatabaseEntry{Host: "127.0.0.1", Port: td.Old.Port, DBName: nativeDatabase},
		newEntry: switchover.DatabaseEntry{Host: "127.0.0.1", Port: td.New.Port, DBName: nativeDatabase},
	}
	sql(b, n.old, `CREATE PUBLICATION native FOR TABLE acct, ev_big, ev_ident`)
	sql(b, n.new, fmt.Sprintf(`CREATE SUBSCRIPTION native CONNECTION '%s' PUBLICATION native WITH (copy_data = false)`, n.oldDSN))
	testwait.For(b, time.Minute, "the native subscription streaming", func() error {
		var streaming bool
		err := n.old.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = 'native' AND state = 'streaming')`).Scan(&streaming)
		if err == nil && !streaming {
			err = errors.New("not streaming yet")
		}
		return err
	})
	rows, err := n.old.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		b.Fatal(err)
	}
	if n.sequences, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		b.Fatal(err)
	}
	n.bouncer = pgbouncertest.Start(b, td.Old, nativeDatabase, pgbouncertest.WithSetting("default_pool_size", poolSize))
	if n.console, err = switchover.NewPgBouncer(n.bouncer.AdminDSN()); err != nil {
		b.Fatal(err)
	}
	if n.loginRetry, err = n.console.Setting(ctx, "server_login_retry"); err != nil {
		b.Fatal(err)
	}
	return n
}

// pauses makes the native switch old → new under load switches times. A
// PG 15 publisher cannot take changes back (no origin = none), so between
// two measured switches clients are moved back to old unmeasured. aborted
// says how many clients PgBouncer disconnected, "" when none.
func (n *nativeSwitch) pauses(b *testing.B) (pauses []pause, aborted string) {
	b.Helper()
	ctx := context.Background()
	began := time.Now()
	load := tandemtest.StartPgbench(b, n.bouncer.DSN(nativeDatabase), switchRate, switchClients, nativeLoad)
	for i := range switches {
		waitForWrites(b, n.oldDSN, switchEvery)
		p, err := n.forward(ctx)
		if err != nil {
			b.Fatalf("native switch %d: %v", i+1, err)
		}
		pauses = append(pauses, p)
		waitForWrites(b, n.newDSN, switchEvery)
		if err := n.back(ctx); err != nil {
			b.Fatalf("native switch %d back to old: %v", i+1, err)
		}
	}
	switched := time.Since(began)
	res := load.Wait(b)
	if res.ExitCode != 0 || res.Failed != 0 {
		// Not pgtandem's failure but a hazard of the PAUSE both share:
		// when it closes a server connection still logging in, PgBouncer
		// disconnects the clients that start a transaction after the
		// RESUME before a new server connection is up.
		aborted = fmt.Sprintf("pgbench exited with code %d, %d of %d clients aborted (%s)", res.ExitCode,
			strings.Count(res.Output, "aborted in command"), switchClients, firstError(res.Output))
	}
	clientPauses(res, pauses)
	caughtUp := make([]string, len(pauses))
	for i, p := range pauses {
		caughtUp[i] = fmt.Sprint(p.caughtUp.Milliseconds())
	}
	b.Logf("native, %d switches in %.0f s of a %.0f s load (%s); pause ms as the script timed it/as clients saw it/waiting for the apply: %s; caught up ms after the RESUME: %s",
		switches, switched.Seconds(), nativeLoad.Seconds(), pgbenchSummary(res), pauseList(pauses, func(p pause) time.Duration { return p.applyWait }), strings.Join(caughtUp, " "))
	return pauses, aborted
}

// forward is the scripted native switch: PAUSE, wait until the subscription
// has applied everything old wrote, carry the sequences, repoint, RESUME.
//
// The applied position is replay_lsn of the subscription's walsender on old,
// the apply position the apply worker reports back: the end of the last
// transaction it committed, or, once what it committed is flushed, all it
// received (keepalives included). It is what synchronous replication to a
// subscriber waits on, and it passes old's current LSN once the worker has
// applied every transaction before it. (In the second case it can run ahead
// of a transaction received but not yet committed, which only favours the
// baseline.) pg_stat_subscription.latest_end_lsn is the sender's position
// from its keepalives, not an applied one; the origin's progress moves only
// with published transactions, so it would never pass WAL written after the
// last of them (another database's, autovacuum's) and would wait for ever.
func (n *nativeSwitch) forward(ctx context.Context) (pause, error) {
	p := pause{start: time.Now()}
	if err := n.console.Pause(ctx, nativeDatabase); err != nil {
		return p, err
	}
	var target string
	if err := n.old.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		return p, err
	}
	waitStart := time.Now()
	for {
		var applied bool
		err := n.old.QueryRow(ctx, `SELECT coalesce(bool_or(replay_lsn >= $1::pg_lsn), false) FROM pg_stat_replication WHERE application_name = 'native'`, target).Scan(&applied)
		if err != nil {
			return p, err
		}
		if applied {
			break
		}
		if time.Since(waitStart) > 30*time.Second {
			return p, fmt.Errorf("the subscription did not apply old's LSN %s in 30 s", target)
		}
		time.Sleep(nativePoll)
	}
	p.applyWait = time.Since(waitStart)
	if err := n.carrySequences(ctx, n.old, n.new); err != nil {
		return p, err
	}
	if err := n.repoint(ctx, n.newEntry); err != nil {
		return p, err
	}
	p.end = time.Now()
	if err := n.console.Set(ctx, "server_login_retry", n.loginRetry); err != nil {
		return p, err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	p.caughtUp = -time.Millisecond // printed as -1: clients still waited after 2 s
	var waiting *switchover.ClientsWaitingError
	switch err := n.console.WaitNoClientWaiting(waitCtx, nativeDatabase, 10*time.Millisecond); {
	case err == nil:
		p.caughtUp = time.Since(p.end)
	case !errors.As(err, &waiting):
		return p, err
	}
	return p, nil
}

// back moves clients to old again: old's sequences are moved to new's
// values, which went on from old's, so that what clients insert on old
// next does not collide on new with the rows they wrote there. Those rows
// stay on new only, which does not matter for timing.
func (n *nativeSwitch) back(ctx context.Context) error {
	if err := n.console.Pause(ctx, nativeDatabase); err != nil {
		return err
	}
	if err := n.carrySequences(ctx, n.new, n.old); err != nil {
		return err
	}
	if err := n.repoint(ctx, n.oldEntry); err != nil {
		return err
	}
	return n.console.Set(ctx, "server_login_retry", n.loginRetry)
}

// repoint points PgBouncer at entry and resumes clients. Like pgtandem
// switch it sets server_login_retry to 0 between the RELOAD and the RESUME:
// without that, PgBouncer 1.18 can hold every client 15 s after the RESUME
// (see switchover.PgBouncer.Redirect), and the baseline would measure
// PgBouncer's pitfall rather than the native procedure.
func (n *nativeSwitch) repoint(ctx context.Context, entry switchover.DatabaseEntry) error {
	if err := n.console.Redirect(ctx, n.bouncer.DatabasesFile(), nativeDatabase, entry); err != nil {
		return err
	}
	if err := n.console.Set(ctx, "server_login_retry", "0"); err != nil {
		return err
	}
	return n.console.Resume(ctx, nativeDatabase)
}

// carrySequences sets every sequence on to exactly as it is on from
// (last_value and is_called), one round trip each side, as pgtandem does.
func (n *nativeSwitch) carrySequences(ctx context.Context, from, to *pgx.Conn) error {
	reads := make([]string, len(n.sequences))
	for i, name := range n.sequences {
		reads[i] = fmt.Sprintf("SELECT %s::text, last_value, is_called FROM %s", quoteLiteral(name), name)
	}
	rows, err := from.Query(ctx, strings.Join(reads, " UNION ALL "))
	if err != nil {
		return fmt.Errorf("read sequences: %w", err)
	}
	var names []string
	var values []int64
	var called []bool
	var name string
	var value int64
	var isCalled bool
	if _, err := pgx.ForEachRow(rows, []any{&name, &value, &isCalled}, func() error {
		names, values, called = append(names, name), append(values, value), append(called, isCalled)
		return nil
	}); err != nil {
		return fmt.Errorf("read sequences: %w", err)
	}
	var set int
	err = to.QueryRow(ctx, `SELECT count(setval(s.name::regclass, s.value, s.called)) FROM unnest($1::text[], $2::bigint[], $3::bool[]) AS s(name, value, called)`,
		names, values, called).Scan(&set)
	if err == nil && set != len(n.sequences) {
		err = errors.New("not every sequence was set")
	}
	if err != nil {
		return fmt.Errorf("set sequences: %w", err)
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// maxMedian returns the largest and the median of f over pauses.
func maxMedian(pauses []pause, f func(pause) time.Duration) (longest, median time.Duration) {
	d := make([]time.Duration, len(pauses))
	for i, p := range pauses {
		d[i] = f(p)
	}
	slices.Sort(d)
	if len(d) == 0 {
		return 0, 0
	}
	return d[len(d)-1], (d[(len(d)-1)/2] + d[len(d)/2]) / 2
}
