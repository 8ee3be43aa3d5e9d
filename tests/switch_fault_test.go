package tests

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/tandemtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// faultKillEnv makes pgtandem switch SIGKILL itself right after the named
// step's end is journaled.
const faultKillEnv = "PGTANDEM_SWITCH_KILL_AFTER"

// faultClients is how many client connections write through PgBouncer in
// each test of this file.
const faultClients = 4

// TestSwitchKilledAfterEachStep kills the switch process (kill -9) right
// after each step, then finishes the switch with --resume or undoes it with
// --abort, twelve cases on one pair of clusters: each case switches from the
// side the clients are on after the previous one. While the process is dead
// between the fence and the RESUME every client waits in PgBouncer and none
// completes a transaction; after --resume or --abort they continue, none has
// failed. At no moment do both clusters take writes: new starts fenced as
// after a rollback, so at rest exactly one side takes writes and at every
// kill point at most one does (a plain session connecting directly is the
// judge), and the clients' commits, ordered by the server clock, change
// cluster exactly once per completed switch. At the end every row a client
// committed is on both clusters and pgtandem verify finds them equal.
// The database fence ends only client sessions of the fenced database: a
// session on another database of each cluster lives through all cases.
func TestSwitchKilledAfterEachStep(t *testing.T) {
	began := time.Now()
	td := tandemtest.Start(t, 15, 17)
	faultExec(t, td.New, `ALTER DATABASE `+tandemtest.Database+` SET default_transaction_read_only = on`)
	suite := &faultKillSuite{td: td, config: td.ConfigFile(t, t.TempDir()), loginRetry: faultBouncerSetting(t, td, "server_login_retry")}
	for _, srv := range []*pglocal.Server{td.Old, td.New} {
		faultExec(t, srv, `CREATE DATABASE bystander`)
		suite.bystanders = append(suite.bystanders, faultConnectBystander(t, srv))
	}
	suite.load = startFaultLoad(t, td.Bouncer.DSN(tandemtest.Database), faultClients)
	load, config := suite.load, suite.config

	on, switched := "old", 0
	for _, step := range switchover.Steps {
		for _, then := range []string{"resume", "abort"} {
			ok := t.Run(step+"-then-"+then, func(t *testing.T) {
				end := suite.run(t, on, step, then)
				if end != on {
					switched++
				}
				on = end
			})
			if !ok {
				t.FailNow() // the next case would start from an unknown state
			}
		}
	}

	load.stop()
	if failed := load.failures(); len(failed) > 0 {
		t.Fatalf("%d client transactions failed, first: %s", len(failed), failed[0])
	}
	faultCheckNoOverlap(t, td, load, switched)
	faultWaitPresent(t, td, load)
	if code, out := faultVerify(t, config); code != 0 {
		t.Fatalf("pgtandem verify after the kill -9 cases: exit %d\n%s", code, out)
	}
	t.Logf("%d kill -9 cases, %d switches completed, %d client transactions, none failed, took %s",
		2*len(switchover.Steps), switched, load.committed(), time.Since(began).Round(time.Second))
}

// faultKillSuite is what the kill -9 cases share: the clusters, the CLI's
// configuration, the client load, PgBouncer's configured
// server_login_retry, and a session on another database of each cluster.
type faultKillSuite struct {
	td         *tandemtest.Tandem
	config     string
	load       *faultLoad
	loginRetry string
	bystanders []*pgx.Conn
}

// run switches from the side clients are on, kills the process after
// step, checks the state it leaves, then runs --resume or --abort (then is
// "resume" or "abort") and returns the side clients are on after.
func (s *faultKillSuite) run(t *testing.T, from, step, then string) string {
	t.Helper()
	td, config, load, loginRetry := s.td, s.config, s.load, s.loginRetry
	to := faultOther(from)
	began := time.Now()
	faultWaitCommits(t, td, load, from, 20)
	mark := load.committed()

	r := faultSwitch(t, td, config, []string{faultKillEnv + "=" + step}, "--from", from, "--to", to)
	if !r.killed {
		t.Fatalf("pgtandem switch with %s=%s: exit %d, not killed\nstdout:\n%s\nstderr:\n%s", faultKillEnv, step, r.code, r.stdout, r.stderr)
	}
	id := faultCheckJournal(t, td, step)
	s.checkBystanders(t)

	at := func(s string) int { return slices.Index(switchover.Steps, s) }
	paused := at(step) < at(switchover.StepResume)
	// PgBouncer paused by the fence is pointed at the target while the
	// marker travels: the marker step ends redirected.
	redirected := at(step) >= at(switchover.StepMarker)
	clientsTo := from
	if redirected {
		clientsTo = to
	}
	var held int
	if paused {
		// Clients only wait: each has sent its next transaction and waits
		// in PgBouncer; none completes until --resume or --abort.
		testwait.For(t, time.Minute, "every client waiting in PgBouncer", func() error {
			if n := faultWaiting(t, td); n < faultClients {
				return fmt.Errorf("%d of %d clients waiting", n, faultClients)
			}
			return nil
		})
		held = load.committed()
	}
	faultCheckBouncer(t, td, clientsTo, paused)
	// The source is fenced from the fence on; the target takes writes from
	// its unfence on.
	toWritable := at(step) >= at(switchover.StepUnfence)
	faultCheckWritable(t, td, map[string]bool{from: false, to: toWritable})
	if paused {
		if n := load.committed(); n != held {
			t.Fatalf("killed after %s: %d client transactions completed while PgBouncer should hold them", step, n-held)
		}
	} else {
		faultWaitCommits(t, td, load, to, 20)
	}

	action := "--" + then
	if then == "abort" && !paused {
		r := faultSwitch(t, td, config, nil, "--from", from, "--to", to, "--abort")
		if r.code != 2 || !strings.Contains(r.stderr, "point of no return") || !strings.Contains(r.stderr, id) {
			t.Fatalf("--abort after the RESUME: exit %d, want 2 naming the point of no return and switch %s\n%s", r.code, id, r.stderr)
		}
		if ids := faultRunning(t, td.Old); !slices.Equal(ids, []string{id}) {
			t.Fatalf("after the refused --abort the running switches on old are %v, want [%s]", ids, id)
		}
		faultCheckBouncer(t, td, to, false)
		then, action = "resume", "--abort refused, --resume"
	}
	r = faultSwitch(t, td, config, nil, "--from", from, "--to", to, "--"+then)
	if r.code != 0 {
		t.Fatalf("--%s after kill -9 after %s: exit %d\nstdout:\n%s\nstderr:\n%s", then, step, r.code, r.stdout, r.stderr)
	}
	end, state := to, switchover.StateDone
	if then == "abort" {
		end, state = from, switchover.StateAborted
	}
	faultCheckBouncer(t, td, end, false)
	faultCheckWritable(t, td, map[string]bool{end: true, faultOther(end): false})
	for _, srv := range []*pglocal.Server{td.Old, td.New} {
		if ids := faultRunning(t, srv); len(ids) > 0 {
			t.Fatalf("after --%s, switches %v are still recorded as running on port %d", then, ids, srv.Port)
		}
		if got := faultSwitchState(t, srv, id); got != state {
			t.Fatalf("switch %s is %q on port %d, want %q", id, got, srv.Port, state)
		}
	}
	if got := faultBouncerSetting(t, td, "server_login_retry"); got != loginRetry {
		t.Errorf("after --%s, PgBouncer's server_login_retry is %s, want its configured %s back", then, got, loginRetry)
	}
	faultWaitCommits(t, td, load, end, 20)
	if failed := load.failures(); len(failed) > 0 {
		t.Fatalf("%d client transactions failed, first: %s", len(failed), failed[0])
	}
	faultWaitPresent(t, td, load)
	s.checkBystanders(t)
	t.Logf("killed after %s, %s: clients on %s, longest client wait %s, case took %s",
		step, action, end, load.longestSince(mark).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	return end
}

// checkBystanders checks that the sessions on database bystander are
// alive: the database fence of the clients' database must spare them. One
// that was ended is opened again, so that the cases go on.
func (s *faultKillSuite) checkBystanders(t *testing.T) {
	t.Helper()
	for i, conn := range s.bystanders {
		if _, err := conn.Exec(context.Background(), `SELECT 1`); err != nil {
			t.Errorf("the session on database bystander of %s was ended by the fence of database %s: %v", []string{"old", "new"}[i], tandemtest.Database, err)
			s.bystanders[i] = faultConnectBystander(t, []*pglocal.Server{s.td.Old, s.td.New}[i])
		}
	}
}

// faultConnectBystander opens a plain session on database bystander of
// srv, closed when the test ends.
func faultConnectBystander(t *testing.T, srv *pglocal.Server) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), srv.DSN("bystander")+"&application_name=fault-bystander")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// faultCheckJournal checks that both clusters record one running switch
// whose step ended and whose next step did not start, and returns its id.
func faultCheckJournal(t *testing.T, td *tandemtest.Tandem, step string) string {
	t.Helper()
	var id string
	next := ""
	if i := slices.Index(switchover.Steps, step); i+1 < len(switchover.Steps) {
		next = switchover.Steps[i+1]
	}
	for _, srv := range []*pglocal.Server{td.Old, td.New} {
		ids := faultRunning(t, srv)
		if len(ids) != 1 || (id != "" && ids[0] != id) {
			t.Fatalf("killed after %s: running switches on port %d are %v, want the one switch", step, srv.Port, ids)
		}
		id = ids[0]
		var ended, nextStarted bool
		err := faultObserve(t, srv, func(conn *pgx.Conn) error {
			return conn.QueryRow(context.Background(), `SELECT
				EXISTS (SELECT 1 FROM pgtandem.switch_steps WHERE switch_id = $1 AND step = $2 AND ended_at IS NOT NULL),
				EXISTS (SELECT 1 FROM pgtandem.switch_steps WHERE switch_id = $1 AND step = $3)`, id, step, next).Scan(&ended, &nextStarted)
		})
		if err != nil {
			t.Fatal(err)
		}
		if !ended || nextStarted {
			t.Fatalf("killed after %s: the journal on port %d shows the step ended %v, step %q started %v", step, srv.Port, ended, next, nextStarted)
		}
	}
	return id
}

// TestSwitchDeadlineUndoes holds a switch inside its write pause past its
// deadline, on one pair of clusters under client load: a fence hook that
// hangs; the marker's lookup on new blocked by a lock; broker2pg (old to
// new) stopped after the preflight proved the flow. Each time the switch
// must undo itself: exit 3, from the fence to the end of the undo at most
// deadline + 1 s, PgBouncer on old and not paused, old writable, new fenced
// again (it starts fenced, as after a rollback), no switch running, clients
// committing on old again. Then, broker2pg stopped before a switch, the
// preflight refuses it. No client transaction fails.
//
// Fence hooks that wait for the test fix the order: the preflight has
// proved the flow before the test blocks or stops it.
func TestSwitchDeadlineUndoes(t *testing.T) {
	const deadline = 2 * time.Second
	td := tandemtest.Start(t, 15, 17)
	config := td.ConfigFile(t, t.TempDir())
	faultExec(t, td.New, `ALTER DATABASE `+tandemtest.Database+` SET default_transaction_read_only = on`)
	load := startFaultLoad(t, td.Bouncer.DSN(tandemtest.Database), faultClients)
	faultWaitCommits(t, td, load, "old", 20)
	withHook := func(hook string, deadline time.Duration) []string {
		return []string{"--from", "old", "--to", "new", "--json",
			"--set", "switch.fence=pgbouncer,database,hook",
			"--set", "switch.hooks.fence=" + hook,
			"--set", "switch.hooks.unfence=true",
			"--set", "switch.deadline=" + deadline.String(),
			"--set", "switch.pause-timeout=" + (deadline / 2).String()}
	}
	// An undo that failed leaves clients paused: the next subtest needs
	// them back on old.
	abortLeftover := func(t *testing.T) {
		t.Cleanup(func() {
			if len(faultRunning(t, td.Old))+len(faultRunning(t, td.New)) > 0 {
				r := faultSwitch(t, td, config, nil, "--from", "old", "--to", "new", "--abort")
				t.Logf("--abort of the switch left running: exit %d\n%s", r.code, r.stderr)
			}
		})
	}

	t.Run("fence-hook-hangs", func(t *testing.T) {
		abortLeftover(t)
		mark := load.committed()
		// Two commands: sh runs sleep as its child, which outlives a kill
		// of sh alone.
		r := faultSwitch(t, td, config, nil, withHook("sleep 8 && true", deadline)...)
		faultCheckUndone(t, td, load, r, deadline, switchover.StepFence, mark)
	})

	t.Run("marker-lookup-blocked-on-new", func(t *testing.T) {
		// The lookup waits for the lock until the deadline, short of the
		// switch sessions' lock_timeout of 2 s, which starts after the
		// fence: the deadline always expires in the middle of a query on
		// new. The fence (a PAUSE, then the database fence's round trip)
		// and the gate have the first 1.5 s, with room for a loaded machine.
		const deadline = 1500 * time.Millisecond
		abortLeftover(t)
		mark := load.committed()
		gate := newFaultGate(t)
		faultSwitchesGone(t, td)
		p := faultStart(t, config, nil, withHook(gate.hook(false), deadline)...)
		gate.waitArrived(t)
		unlock := faultLockMarkers(t, td.New)
		gate.release(t)
		r := p.wait(t)
		unlock()
		faultCheckUndone(t, td, load, r, deadline, switchover.StepMarker, mark)
	})

	t.Run("broker2pg-stopped-in-the-pause", func(t *testing.T) {
		abortLeftover(t)
		mark := load.committed()
		gate := newFaultGate(t)
		faultSwitchesGone(t, td)
		p := faultStart(t, config, nil, withHook(gate.hook(false), deadline)...)
		gate.waitArrived(t)
		if err := td.StopForward(); err != nil {
			t.Fatalf("stop broker2pg --from old --to new: %v", err)
		}
		gate.release(t)
		faultCheckUndone(t, td, load, p.wait(t), deadline, switchover.StepMarker, mark)
	})

	t.Run("broker2pg-stopped-before-the-switch", func(t *testing.T) {
		before := faultSwitchCount(t, td.Old)
		r := faultSwitch(t, td, config, nil, "--from", "old", "--to", "new", "--set", "switch.probe-timeout=2s")
		if r.code != 2 || !strings.Contains(r.stderr, "switch refused (lag)") || !strings.Contains(r.stderr, "broker2pg --from old --to new") {
			t.Fatalf("switch with broker2pg stopped before it: exit %d, want 2 naming the forward flow\n%s", r.code, r.stderr)
		}
		faultCheckUnchanged(t, td, before)
	})

	load.stop()
	if failed := load.failures(); len(failed) > 0 {
		t.Fatalf("%d client transactions failed, first: %s", len(failed), failed[0])
	}
	faultCheckNoOverlap(t, td, load, 0)
	faultWaitPresentOn(t, td.Old, load)
}

// faultLockMarkers takes an ACCESS EXCLUSIVE lock on srv's marker table
// in an open transaction, and returns what ends it.
func faultLockMarkers(t *testing.T, srv *pglocal.Server) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(srv.DSN(tandemtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "pgtandem fault test"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, `LOCK TABLE pgtandem.switch_marker IN ACCESS EXCLUSIVE MODE`)
	}
	if err != nil {
		conn.Close(ctx)
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			_ = tx.Rollback(ctx)
			conn.Close(ctx)
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// faultCheckUndone checks a switch that ran past its deadline at step: exit
// 3, undone by itself within deadline + 1 s from the fence, and clients
// back on old.
func faultCheckUndone(t *testing.T, td *tandemtest.Tandem, load *faultLoad, r faultResult, deadline time.Duration, step string, mark int) {
	t.Helper()
	if r.code != 3 || !strings.Contains(r.stderr, "ran past the deadline at step "+step) {
		t.Fatalf("exit %d, want 3, undone past the deadline at step %s\nstdout:\n%s\nstderr:\n%s", r.code, step, r.stdout, r.stderr)
	}
	rep := faultReport(t, r.stdout)
	pause := rep.PauseEnd.Sub(rep.PauseStart)
	last := rep.Steps[len(rep.Steps)-1]
	if rep.Outcome != switchover.OutcomeUndone || last.Step != switchover.StepUndo || !last.End.Equal(rep.PauseEnd) {
		t.Fatalf("report: outcome %q, last step %q ending %s, pause end %s; want undone, ended by the undo", rep.Outcome, last.Step, last.End, rep.PauseEnd)
	}
	if pause < deadline || pause > deadline+time.Second {
		t.Errorf("from the fence to the end of the undo: %s, want between the deadline %s and %s; steps %+v", pause, deadline, deadline+time.Second, rep.Steps)
	}
	faultCheckBouncer(t, td, "old", false)
	faultCheckWritable(t, td, map[string]bool{"old": true, "new": false})
	faultCheckNoneRunning(t, td)
	if got := faultSwitchState(t, td.Old, rep.SwitchID); got != switchover.StateUndone {
		t.Fatalf("switch %s is %q on old, want undone", rep.SwitchID, got)
	}
	faultWaitCommits(t, td, load, "old", 20)
	t.Logf("undone at the deadline, step %s: pause %s (fence to end of undo), longest client wait %s",
		step, pause.Round(time.Millisecond), load.longestSince(mark).Round(time.Millisecond))
}

// TestSwitchRefusesBadInputs gives the switch what it must not act on,
// one subtest each on one pair of clusters under client load. Each is a
// named error, exit 2 (refused: no switch is even recorded) or exit 3 for
// a PAUSE that cannot complete (the write pause began, PgBouncer's PAUSE
// was given up and undone), and afterwards clients are on old, PgBouncer
// is not paused, old takes writes and no switch is running. No client
// transaction fails.
func TestSwitchRefusesBadInputs(t *testing.T) {
	td := tandemtest.Start(t, 15, 17)
	config := td.ConfigFile(t, t.TempDir())
	load := startFaultLoad(t, td.Bouncer.DSN(tandemtest.Database), faultClients)
	faultWaitCommits(t, td, load, "old", 20)

	// refused runs a switch that must be refused by name with nothing
	// changed, not even a journal row.
	refused := func(t *testing.T, want []string, args ...string) faultResult {
		t.Helper()
		before := faultSwitchCount(t, td.Old)
		r := faultSwitch(t, td, config, nil, args...)
		if r.code != 2 || !containsAll(r.stderr, want) {
			t.Fatalf("pgtandem switch %s: exit %d, want 2 and %q in\n%s", strings.Join(args, " "), r.code, want, r.stderr)
		}
		faultCheckUnchanged(t, td, before)
		return r
	}

	// The unreachable ends are given with a password: it must not show.
	const password = "fault-s3cret"
	t.Run("pgbouncer-unreachable", func(t *testing.T) {
		closed := faultClosedPort(t)
		r := refused(t, []string{"switch refused (pgbouncer)", "127.0.0.1:" + strconv.Itoa(closed), "nothing was changed"},
			"--from", "old", "--to", "new",
			"--set", fmt.Sprintf("switch.pgbouncer.admin=postgres://postgres:%s@127.0.0.1:%d/pgbouncer?sslmode=disable&connect_timeout=2", password, closed))
		if strings.Contains(r.stdout+r.stderr, password) {
			t.Fatalf("the password of the admin connection string shows:\n%s%s", r.stdout, r.stderr)
		}
	})

	t.Run("new-unreachable", func(t *testing.T) {
		closed := faultClosedPort(t)
		r := refused(t, []string{"switch refused (connect)", "cluster new", "nothing was changed"},
			"--from", "old", "--to", "new",
			"--set", fmt.Sprintf("clusters.new.dsn=postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", password, closed),
			"--set", fmt.Sprintf("clusters.new.pgbouncer-entry=%s", td.New.DSN(tandemtest.Database)))
		if strings.Contains(r.stdout+r.stderr, password) {
			t.Fatalf("the password of new's DSN shows:\n%s%s", r.stdout, r.stderr)
		}
	})

	t.Run("wrong-direction", func(t *testing.T) {
		refused(t, []string{"switch refused (pgbouncer)", "wrong direction"}, "--from", "new", "--to", "old")
	})

	t.Run("sequence-missing-on-new", func(t *testing.T) {
		faultExec(t, td.New, `DROP SEQUENCE standalone_seq`)
		defer faultExec(t, td.New, `CREATE SEQUENCE standalone_seq`)
		refused(t, []string{"switch refused (sequences)", "public.standalone_seq", "missing on new"}, "--from", "old", "--to", "new")
	})

	t.Run("lag-above-the-limit", func(t *testing.T) {
		refused(t, []string{"switch refused (lag)", "more than switch.max-lag 1ms"},
			"--from", "old", "--to", "new", "--set", "switch.max-lag=1ms")
	})

	t.Run("transaction-older-than-the-limit", func(t *testing.T) {
		idle := faultIdleInTransaction(t, td, time.Second)
		refused(t, []string{"switch refused (transactions)", "idle in transaction", "switch.max-transaction-age 1s"},
			"--from", "old", "--to", "new", "--set", "switch.max-transaction-age=1s")
		idle.commit(t, td)
	})

	// While the PAUSE waits, old is not read-only yet: PgBouncer may still
	// open server connections until it has the PAUSE, and one opened
	// read-only would fail its clients' writes for its life, after the
	// undo's RESUME too.
	t.Run("pause-held-by-a-client-idle-in-transaction", func(t *testing.T) {
		idle := faultIdleInTransaction(t, td, 0)
		before := faultSwitchCount(t, td.Old)
		faultSwitchesGone(t, td)
		sw := faultStart(t, config, nil, "--from", "old", "--to", "new",
			"--set", "switch.max-transaction-age=1h", "--set", "switch.pause-timeout=3s")
		testwait.For(t, time.Minute, "PgBouncer pausing "+tandemtest.Database, func() error {
			d, err := faultBouncerDatabase(context.Background(), t, td)
			if err == nil && !d.Paused {
				err = errors.New("not paused")
			}
			return err
		})
		if !faultWritable(t, td.Old) {
			t.Errorf("a session that starts on old while the PAUSE waits is read-only")
		}
		r := sw.wait(t)
		want := []string{"failed at step fence and was undone", "PAUSE postgres did not complete within", "idle in transaction", "the database was resumed"}
		if r.code != 3 || !containsAll(r.stderr, want) {
			t.Fatalf("PAUSE held by an open transaction: exit %d, want 3 and %q in\n%s", r.code, want, r.stderr)
		}
		faultCheckUnchanged(t, td, before+1)
		idle.commit(t, td)
	})

	t.Run("second-switch-while-one-runs", func(t *testing.T) {
		gate := newFaultGate(t)
		faultSwitchesGone(t, td)
		first := faultStart(t, config, nil, "--from", "old", "--to", "new",
			"--set", "switch.fence=pgbouncer,database,hook",
			"--set", "switch.hooks.fence="+gate.hook(true),
			"--set", "switch.hooks.unfence=true")
		gate.waitArrived(t)
		for _, dir := range [][]string{{"--from", "old", "--to", "new"}, {"--from", "new", "--to", "old"}, {"--from", "old", "--to", "new", "--abort"}} {
			r := faultStart(t, config, nil, dir...).wait(t)
			if r.code != 2 || !strings.Contains(r.stderr, "another pgtandem switch is running now") {
				t.Fatalf("pgtandem switch %s during one: exit %d, want 2, another switch running\n%s", strings.Join(dir, " "), r.code, r.stderr)
			}
		}
		gate.release(t)
		r := first.wait(t)
		if r.code != 3 || !strings.Contains(r.stderr, "fence hook") {
			t.Fatalf("the first switch, its fence hook failing: exit %d, want 3\n%s", r.code, r.stderr)
		}
		faultCheckUnchanged(t, td, -1)
	})

	t.Run("second-switch-while-one-is-recorded-running", func(t *testing.T) {
		r := faultSwitch(t, td, config, []string{faultKillEnv + "=" + switchover.StepFence}, "--from", "old", "--to", "new")
		if !r.killed {
			t.Fatalf("switch with %s=fence: exit %d, not killed\n%s", faultKillEnv, r.code, r.stderr)
		}
		ids := faultRunning(t, td.Old)
		if len(ids) != 1 {
			t.Fatalf("running switches on old: %v", ids)
		}
		want := []string{"switch " + ids[0] + " from old to new", "is recorded as running", "--resume", "--abort", "nothing was changed"}
		for _, dir := range [][]string{{"--from", "old", "--to", "new"}, {"--from", "new", "--to", "old"}} {
			r := faultSwitch(t, td, config, nil, dir...)
			if r.code != 2 || !containsAll(r.stderr, want) {
				t.Fatalf("pgtandem switch %s while %s is recorded running: exit %d, want 2 and %q in\n%s", strings.Join(dir, " "), ids[0], r.code, want, r.stderr)
			}
		}
		r = faultSwitch(t, td, config, nil, "--from", "new", "--to", "old", "--abort")
		if r.code != 2 || !strings.Contains(r.stderr, "goes from old to new") {
			t.Errorf("--abort in the wrong direction: exit %d, want 2 (refused, nothing changed) naming the running direction\n%s", r.code, r.stderr)
		}
		faultCheckBouncer(t, td, "old", true)
		r = faultSwitch(t, td, config, nil, "--from", "old", "--to", "new", "--abort")
		if r.code != 0 {
			t.Fatalf("--abort: exit %d\n%s", r.code, r.stderr)
		}
		faultCheckUnchanged(t, td, -1)
		if got := faultSwitchState(t, td.Old, ids[0]); got != switchover.StateAborted {
			t.Fatalf("switch %s is %q, want aborted", ids[0], got)
		}
	})

	t.Run("nothing-to-resume-or-abort", func(t *testing.T) {
		for _, mode := range []string{"--resume", "--abort"} {
			refused(t, []string{"no switch is recorded as running"}, "--from", "old", "--to", "new", mode)
		}
	})

	t.Run("bad-configuration", func(t *testing.T) {
		refused(t, []string{"switch.fence", `unknown strategy "firewall"`}, "--from", "old", "--to", "new", "--set", "switch.fence=firewall")
		refused(t, []string{"switch.pause-timeout", "shorter than the deadline"}, "--from", "old", "--to", "new", "--set", "switch.deadline=1s")
	})

	load.stop()
	if failed := load.failures(); len(failed) > 0 {
		t.Fatalf("%d client transactions failed, first: %s", len(failed), failed[0])
	}
	faultCheckNoOverlap(t, td, load, 0)
	faultWaitPresent(t, td, load)
}

// faultIdle is a client through PgBouncer inside a transaction that wrote
// a row and then waits: it holds its server connection.
type faultIdle struct {
	conn *pgconn.PgConn
	id   int64
}

// faultIdleInTransaction opens a transaction through PgBouncer that inserts
// a row and stays idle, and waits until old shows it older than age.
func faultIdleInTransaction(t *testing.T, td *tandemtest.Tandem, age time.Duration) *faultIdle {
	t.Helper()
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, td.Bouncer.DSN(tandemtest.Database)+"&application_name=fault-idle")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFaultConn(conn) })
	results, err := conn.Exec(ctx, `BEGIN; INSERT INTO ev_big (aid) VALUES (-1) RETURNING id`).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	idle := &faultIdle{conn: conn}
	if idle.id, err = strconv.ParseInt(string(results[1].Rows[0][0]), 10, 64); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, time.Minute, "the open transaction idle on old", func() error {
		var n int
		err := faultObserve(t, td.Old, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'
				AND backend_type = 'client backend' AND xact_start < now() - make_interval(secs => $1)`, age.Seconds()).Scan(&n)
		})
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d sessions idle in transaction for %s", n, age)
		}
		return nil
	})
	return idle
}

// commit ends the transaction: it must still be there and commit on old.
func (i *faultIdle) commit(t *testing.T, td *tandemtest.Tandem) {
	t.Helper()
	if _, err := i.conn.Exec(context.Background(), `COMMIT`).ReadAll(); err != nil {
		t.Fatalf("the client idle in transaction cannot commit: %v", err)
	}
	var n int
	if err := faultObserve(t, td.Old, func(c *pgx.Conn) error {
		return c.QueryRow(context.Background(), `SELECT count(*) FROM ev_big WHERE id = $1`, i.id).Scan(&n)
	}); err != nil || n != 1 {
		t.Fatalf("the idle client's row %d on old: %d rows, %v", i.id, n, err)
	}
}

// faultCommit is one client transaction that committed: the ids it
// inserted, the server port it ran on, the server's clock just before its
// commit in microseconds (both servers run on this machine: one clock),
// and how long the client waited for it.
type faultCommit struct {
	big, ident int64
	port       int
	at         int64
	took       time.Duration
}

// faultTxnSQL is one client transaction, sent as one simple query: an
// implicit transaction, all or nothing, one round trip.
const faultTxnSQL = `UPDATE acct SET balance = balance + 1 WHERE id = %d;
INSERT INTO ev_big (aid) VALUES (%[1]d) RETURNING id;
INSERT INTO ev_ident (aid) VALUES (%[1]d) RETURNING id;
SELECT nextval('standalone_seq'), nextval('desc_seq');
SELECT inet_server_port(), (extract(epoch FROM clock_timestamp()) * 1000000)::bigint`

// faultLoad runs client transactions through PgBouncer over a few
// connections until stopped, recording each commit and each failure.
type faultLoad struct {
	dsn     string
	stopped atomic.Bool
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex
	commits []faultCommit
	failed  []string
}

func startFaultLoad(t *testing.T, dsn string, clients int) *faultLoad {
	t.Helper()
	l := &faultLoad{dsn: dsn + "&application_name=fault-client"}
	for c := 0; c < clients; c++ {
		conn, err := l.connect()
		if err != nil {
			t.Fatal(err)
		}
		l.wg.Add(1)
		go l.run(conn, c)
	}
	t.Cleanup(l.stop)
	return l
}

func (l *faultLoad) connect() (*pgconn.PgConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return pgconn.Connect(ctx, l.dsn)
}

func (l *faultLoad) run(conn *pgconn.PgConn, client int) {
	defer l.wg.Done()
	defer func() { closeFaultConn(conn) }()
	for i := 0; !l.stopped.Load(); i++ {
		if conn.IsClosed() {
			fresh, err := l.connect()
			if err != nil {
				l.fail(fmt.Errorf("client %d: reconnect: %w", client, err))
				time.Sleep(100 * time.Millisecond) // pacing a client that failed already
				continue
			}
			conn = fresh
		}
		c, err := faultTxn(conn, 1+(client*251+i)%tandemtest.Accounts)
		if err != nil {
			l.fail(fmt.Errorf("client %d: %w", client, err))
			continue
		}
		l.mu.Lock()
		l.commits = append(l.commits, c)
		l.mu.Unlock()
		time.Sleep(10 * time.Millisecond) // a client's think time: about 400 transactions a second in all
	}
}

func faultTxn(conn *pgconn.PgConn, aid int) (faultCommit, error) {
	// Longer than PgBouncer's query_wait_timeout (120 s): PgBouncer, not
	// the client, gives up on a pause that lasts too long.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	results, err := conn.Exec(ctx, fmt.Sprintf(faultTxnSQL, aid)).ReadAll()
	took := time.Since(start)
	if err != nil {
		return faultCommit{}, err
	}
	if len(results) != 5 || len(results[1].Rows) != 1 || len(results[2].Rows) != 1 || len(results[4].Rows) != 1 {
		return faultCommit{}, fmt.Errorf("unexpected results %v", results)
	}
	c := faultCommit{took: took}
	for _, f := range []struct {
		dst *int64
		raw []byte
	}{{&c.big, results[1].Rows[0][0]}, {&c.ident, results[2].Rows[0][0]}, {&c.at, results[4].Rows[0][1]}} {
		if *f.dst, err = strconv.ParseInt(string(f.raw), 10, 64); err != nil {
			return c, err
		}
	}
	c.port, err = strconv.Atoi(string(results[4].Rows[0][0]))
	return c, err
}

func (l *faultLoad) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed = append(l.failed, err.Error())
}

func (l *faultLoad) stop() {
	l.once.Do(func() {
		l.stopped.Store(true)
		l.wg.Wait()
	})
}

func (l *faultLoad) committed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.commits)
}

func (l *faultLoad) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failed)
}

func (l *faultLoad) snapshot() []faultCommit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.commits)
}

// longestSince is the longest a client waited for a transaction that
// committed after the first mark commits.
func (l *faultLoad) longestSince(mark int) time.Duration {
	var longest time.Duration
	for _, c := range l.snapshot()[mark:] {
		longest = max(longest, c.took)
	}
	return longest
}

// faultWaitCommits waits until clients committed n more transactions on
// side ("old" or "new").
func faultWaitCommits(t *testing.T, td *tandemtest.Tandem, l *faultLoad, side string, n int) {
	t.Helper()
	mark, port := l.committed(), faultServer(td, side).Port
	testwait.For(t, 2*time.Minute, fmt.Sprintf("%d client transactions on %s", n, side), func() error {
		got := 0
		for _, c := range l.snapshot()[mark:] {
			if c.port == port {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

// faultCheckNoOverlap checks that the clients' commits, in the servers'
// clock order, moved from one cluster to the other exactly once per
// completed switch: two clusters taking commits at once would interleave.
// Every id is unique: a sequence handed over short would repeat one.
func faultCheckNoOverlap(t *testing.T, td *tandemtest.Tandem, l *faultLoad, switches int) {
	t.Helper()
	commits := l.snapshot()
	slices.SortFunc(commits, func(a, b faultCommit) int { return cmp.Compare(a.at, b.at) })
	changes := 0
	big, ident := map[int64]bool{}, map[int64]bool{}
	for i, c := range commits {
		if c.port != td.Old.Port && c.port != td.New.Port {
			t.Fatalf("a client transaction ran on port %d, neither old (%d) nor new (%d)", c.port, td.Old.Port, td.New.Port)
		}
		if i > 0 && c.port != commits[i-1].port {
			changes++
		}
		if big[c.big] || ident[c.ident] {
			t.Fatalf("id %d of ev_big or %d of ev_ident given to two client transactions", c.big, c.ident)
		}
		big[c.big], ident[c.ident] = true, true
	}
	if changes != switches {
		t.Fatalf("client commits moved between clusters %d times, want %d (one per completed switch)", changes, switches)
	}
}

// faultWaitPresent waits until every row a client committed is on both
// clusters: nothing lost on either side of any switch.
func faultWaitPresent(t *testing.T, td *tandemtest.Tandem, l *faultLoad) {
	t.Helper()
	faultWaitPresentOn(t, td.Old, l)
	faultWaitPresentOn(t, td.New, l)
}

func faultWaitPresentOn(t *testing.T, srv *pglocal.Server, l *faultLoad) {
	t.Helper()
	commits := l.snapshot()
	big, ident := make([]int64, len(commits)), make([]int64, len(commits))
	for i, c := range commits {
		big[i], ident[i] = c.big, c.ident
	}
	testwait.For(t, 2*time.Minute, fmt.Sprintf("the %d committed client transactions on port %d", len(commits), srv.Port), func() error {
		var nb, ni int
		err := faultObserve(t, srv, func(c *pgx.Conn) error {
			return c.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM ev_big WHERE id = ANY($1)), (SELECT count(*) FROM ev_ident WHERE id = ANY($2))`,
				big, ident).Scan(&nb, &ni)
		})
		if err != nil {
			return err
		}
		if nb != len(big) || ni != len(ident) {
			return fmt.Errorf("%d of %d ev_big rows, %d of %d ev_ident rows", nb, len(big), ni, len(ident))
		}
		return nil
	})
}

// faultResult is how a pgtandem switch process ended.
type faultResult struct {
	// code is the exit code, -1 when killed.
	code           int
	killed         bool
	stdout, stderr string
}

// faultProc is a pgtandem switch process running.
type faultProc struct {
	cmd            *exec.Cmd
	ctx            context.Context
	cancel         context.CancelFunc
	stdout, stderr bytes.Buffer
}

// faultStart starts pgtandem --config config switch args with env added.
func faultStart(t *testing.T, config string, env []string, args ...string) *faultProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	p := &faultProc{ctx: ctx, cancel: cancel}
	p.cmd = exec.CommandContext(ctx, pgtandemBin, append([]string{"--config", config, "switch"}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = p.cmd.Wait()
	})
	return p
}

func (p *faultProc) wait(t *testing.T) faultResult {
	t.Helper()
	err := p.cmd.Wait()
	timedOut := p.ctx.Err() != nil
	p.cancel()
	r := faultResult{stdout: p.stdout.String(), stderr: p.stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.killed = ws.Signal() == syscall.SIGKILL
		}
	default:
		t.Fatalf("pgtandem %s: %v", strings.Join(p.cmd.Args[1:], " "), err)
	}
	if timedOut {
		t.Fatalf("pgtandem %s did not end within 3 minutes\n%s", strings.Join(p.cmd.Args[1:], " "), r.stderr)
	}
	return r
}

// faultSwitch runs pgtandem switch to its end, once the sessions of the
// switch process before are gone (see faultSwitchesGone).
func faultSwitch(t *testing.T, td *tandemtest.Tandem, config string, env []string, args ...string) faultResult {
	t.Helper()
	faultSwitchesGone(t, td)
	return faultStart(t, config, env, args...).wait(t)
}

// faultSwitchesGone waits until no session of an earlier switch process is
// left on either cluster: its advisory lock would refuse the next switch.
func faultSwitchesGone(t *testing.T, td *tandemtest.Tandem) {
	t.Helper()
	testwait.For(t, time.Minute, "no pgtandem switch session left on either cluster", func() error {
		for _, srv := range []*pglocal.Server{td.Old, td.New} {
			var n int
			if err := faultObserve(t, srv, func(c *pgx.Conn) error {
				return c.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, switchover.ApplicationName).Scan(&n)
			}); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%d on port %d", n, srv.Port)
			}
		}
		return nil
	})
}

// faultReport reads the --json report from the standard output.
func faultReport(t *testing.T, stdout string) switchover.Report {
	t.Helper()
	var rep switchover.Report
	if err := json.Unmarshal([]byte(stdout[strings.Index(stdout, "{"):]), &rep); err != nil {
		t.Fatalf("the --json report: %v\n%s", err, stdout)
	}
	return rep
}

// faultVerify runs pgtandem verify --from old --to new.
func faultVerify(t *testing.T, config string) (int, string) {
	t.Helper()
	out, err := exec.Command(pgtandemBin, "--config", config, "verify", "--from", "old", "--to", "new").CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// faultGate is a fence hook that holds the switch until the test lets it
// go: the hook touches a file, then reads a named pipe until the test
// opens and closes its other end.
type faultGate struct {
	arrived, pipe string
}

func newFaultGate(t *testing.T) *faultGate {
	t.Helper()
	dir := t.TempDir()
	g := &faultGate{arrived: filepath.Join(dir, "arrived"), pipe: filepath.Join(dir, "release")}
	if err := syscall.Mkfifo(g.pipe, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.tryRelease() }) // never leave a hook blocked
	return g
}

// hook is the command for switch.hooks.fence; fail makes it exit 1 once
// released.
func (g *faultGate) hook(fail bool) string {
	cmd := fmt.Sprintf("touch %s && cat %s", g.arrived, g.pipe)
	if fail {
		cmd += " && echo held by the test >&2 && exit 1"
	}
	return cmd
}

func (g *faultGate) waitArrived(t *testing.T) {
	t.Helper()
	testwait.For(t, 2*time.Minute, "the switch in its fence hook", func() error {
		_, err := os.Stat(g.arrived)
		return err
	})
}

func (g *faultGate) release(t *testing.T) {
	t.Helper()
	testwait.For(t, time.Minute, "the fence hook reading its pipe", g.tryRelease)
}

// tryRelease closes the pipe's write end once a reader is there: the hook's
// read then ends.
func (g *faultGate) tryRelease() error {
	f, err := os.OpenFile(g.pipe, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// faultObserve runs f on a fresh session of srv named like pgtandem's, so
// that the database fence neither terminates it nor makes it read-only:
// the test's eyes, not a client.
func faultObserve(t *testing.T, srv *pglocal.Server, f func(*pgx.Conn) error) error {
	t.Helper()
	cfg, err := pgx.ParseConfig(srv.DSN(tandemtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "pgtandem fault test"
	cfg.RuntimeParams["default_transaction_read_only"] = "off"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return f(conn)
}

func faultExec(t *testing.T, srv *pglocal.Server, sql string) {
	t.Helper()
	if err := faultObserve(t, srv, func(c *pgx.Conn) error {
		_, err := c.Exec(context.Background(), sql)
		return err
	}); err != nil {
		t.Fatalf("%s on port %d: %v", sql, srv.Port, err)
	}
}

// faultWritable tells whether a plain client connecting to srv directly
// now can write: an UPDATE that matches no row fails with
// read_only_sql_transaction on a fenced database all the same.
func faultWritable(t *testing.T, srv *pglocal.Server) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN(tandemtest.Database)+"&application_name=fault-direct-client")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `UPDATE acct SET balance = balance WHERE id = 0`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25006" {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// faultCheckWritable checks whether each named side takes writes from a
// direct client, as want says.
func faultCheckWritable(t *testing.T, td *tandemtest.Tandem, want map[string]bool) {
	t.Helper()
	for side, w := range want {
		if got := faultWritable(t, faultServer(td, side)); got != w {
			t.Fatalf("%s takes writes from a direct client: %v, want %v", side, got, w)
		}
	}
}

func faultBouncer(t *testing.T, td *tandemtest.Tandem) *switchover.PgBouncer {
	t.Helper()
	b, err := switchover.NewPgBouncer(td.Bouncer.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// faultCheckBouncer checks that PgBouncer sends clients to side and is
// paused or not.
func faultCheckBouncer(t *testing.T, td *tandemtest.Tandem, side string, paused bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := faultBouncerDatabase(ctx, t, td)
	if err != nil {
		t.Fatal(err)
	}
	if d.Port != faultServer(td, side).Port || d.Paused != paused {
		t.Fatalf("PgBouncer sends %s to port %d, paused %v; want %s (port %d), paused %v", d.Name, d.Port, d.Paused, side, faultServer(td, side).Port, paused)
	}
}

// faultBouncerDatabase is PgBouncer's SHOW DATABASES row of the database
// clients use.
func faultBouncerDatabase(ctx context.Context, t *testing.T, td *tandemtest.Tandem) (switchover.Database, error) {
	t.Helper()
	d, err := faultBouncer(t, td).Database(ctx, tandemtest.Database)
	if err == nil && d == nil {
		err = fmt.Errorf("PgBouncer has no database %s", tandemtest.Database)
	}
	if err != nil {
		return switchover.Database{}, err
	}
	return *d, nil
}

func faultBouncerSetting(t *testing.T, td *tandemtest.Tandem, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := faultBouncer(t, td).Setting(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// faultWaiting counts the clients waiting in PgBouncer for a server
// connection of the clients' database.
func faultWaiting(t *testing.T, td *tandemtest.Tandem) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pools, err := faultBouncer(t, td).Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pools {
		if p.Database == tandemtest.Database {
			n += p.ClientsWaiting
		}
	}
	return n
}

// faultCheckUnchanged checks that clients are where they were before a
// refused or undone switch: PgBouncer on old and not paused, old takes
// writes, no switch running; and, unless switches is -1, that old's
// journal holds that many switches.
func faultCheckUnchanged(t *testing.T, td *tandemtest.Tandem, switches int) {
	t.Helper()
	faultCheckBouncer(t, td, "old", false)
	faultCheckWritable(t, td, map[string]bool{"old": true})
	faultCheckNoneRunning(t, td)
	if n := faultSwitchCount(t, td.Old); switches >= 0 && n != switches {
		t.Fatalf("old's journal holds %d switches, want %d", n, switches)
	}
}

func faultCheckNoneRunning(t *testing.T, td *tandemtest.Tandem) {
	t.Helper()
	for _, srv := range []*pglocal.Server{td.Old, td.New} {
		if ids := faultRunning(t, srv); len(ids) > 0 {
			t.Fatalf("switches %v recorded as running on port %d", ids, srv.Port)
		}
	}
}

// faultJournaled tells whether srv has the switch journal: the first
// switch creates it.
func faultJournaled(c *pgx.Conn) (bool, error) {
	var ok bool
	err := c.QueryRow(context.Background(), `SELECT to_regclass('pgtandem.switches') IS NOT NULL`).Scan(&ok)
	return ok, err
}

// faultRunning lists the switches srv's journal records as running.
func faultRunning(t *testing.T, srv *pglocal.Server) []string {
	t.Helper()
	var ids []string
	if err := faultObserve(t, srv, func(c *pgx.Conn) error {
		if ok, err := faultJournaled(c); !ok || err != nil {
			return err
		}
		rows, err := c.Query(context.Background(), `SELECT switch_id FROM pgtandem.switches WHERE state = 'running' ORDER BY started_at`)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}

func faultSwitchState(t *testing.T, srv *pglocal.Server, id string) string {
	t.Helper()
	var state string
	if err := faultObserve(t, srv, func(c *pgx.Conn) error {
		return c.QueryRow(context.Background(), `SELECT state FROM pgtandem.switches WHERE switch_id = $1`, id).Scan(&state)
	}); err != nil {
		t.Fatalf("switch %s on port %d: %v", id, srv.Port, err)
	}
	return state
}

func faultSwitchCount(t *testing.T, srv *pglocal.Server) int {
	t.Helper()
	var n int
	if err := faultObserve(t, srv, func(c *pgx.Conn) error {
		if ok, err := faultJournaled(c); !ok || err != nil {
			return err
		}
		return c.QueryRow(context.Background(), `SELECT count(*) FROM pgtandem.switches`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func faultServer(td *tandemtest.Tandem, side string) *pglocal.Server {
	if side == "new" {
		return td.New
	}
	return td.Old
}

func faultOther(side string) string {
	if side == "old" {
		return "new"
	}
	return "old"
}

// faultClosedPort returns a loopback port nothing listens on.
func faultClosedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

func closeFaultConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
