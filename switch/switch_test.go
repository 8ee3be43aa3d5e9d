package switchover_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/tandemtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// clientLoad runs transactions through PgBouncer until stopped and counts
// the ones that failed.
type clientLoad struct {
	done, failed atomic.Int64
	lastErr      atomic.Value
	stop         func()
}

func startLoad(t *testing.T, dsn string, clients int) *clientLoad {
	t.Helper()
	l := &clientLoad{}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{}, clients)
	for c := 0; c < clients; c++ {
		conn, err := pgx.Connect(context.Background(), dsn+"&default_query_exec_mode=simple_protocol")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer func() { finished <- struct{}{} }()
			defer conn.Close(context.Background())
			for i := 0; ctx.Err() == nil; i++ {
				_, err := conn.Exec(ctx, `BEGIN; UPDATE acct SET balance = balance + 1 WHERE id = `+itoa(1+i%tandemtest.Accounts)+`;
					INSERT INTO ev_big (aid) VALUES (1); INSERT INTO ev_ident (aid) VALUES (1); SELECT nextval('standalone_seq'); COMMIT`)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					l.failed.Add(1)
					l.lastErr.Store(err.Error())
					continue
				}
				l.done.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			cancel()
			for c := 0; c < clients; c++ {
				<-finished
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func itoa(i int) string {
	return string(rune('0'+i/1000%10)) + string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

func TestSwitchAndRollback(t *testing.T) {
	td := tandemtest.Start(t, 15, 17)
	load := startLoad(t, td.Bouncer.DSN(tandemtest.Database), 4)
	ctx := context.Background()
	// A session of another database, and a client that bypasses PgBouncer.
	admin := pgtest.Connect(t, td.Old, tandemtest.Database)
	if _, err := admin.Exec(ctx, `CREATE DATABASE other`); err != nil {
		t.Fatal(err)
	}
	otherDB := pgtest.Connect(t, td.Old, "other")
	direct := pgtest.Connect(t, td.Old, tandemtest.Database)
	for _, from := range []string{"old", "new"} {
		before := load.done.Load()
		testwait.For(t, time.Minute, "200 client transactions", func() error {
			if done := load.done.Load() - before; done < 200 {
				return fmt.Errorf("%d done, %d failed", done, load.failed.Load())
			}
			return nil
		})
		rep, err := switchover.Run(ctx, td.SwitchConfig(from), td.SwitchOptions(t), servicetest.Logger())
		if err != nil {
			t.Fatalf("switch from %s: %v", from, err)
		}
		t.Logf("switch from %s: pause %s, steps %+v", from, rep.Pause, rep.Steps)
		if from != "old" {
			continue
		}
		// The database fence ended the direct client, spared the other
		// database, and leaves old readable but not writable.
		if err := direct.Ping(ctx); err == nil {
			t.Fatal("a direct client session of old survived the database fence")
		}
		if err := otherDB.Ping(ctx); err != nil {
			t.Fatalf("the fence of database postgres ended a session of database other: %v", err)
		}
		fresh := pgtest.Connect(t, td.Old, tandemtest.Database)
		var n int
		if err := fresh.QueryRow(ctx, `SELECT count(*) FROM acct`).Scan(&n); err != nil || n != tandemtest.Accounts {
			t.Fatalf("read on fenced old: %d rows, %v", n, err)
		}
		if _, err := fresh.Exec(ctx, `UPDATE acct SET balance = 0 WHERE id = 1`); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("write on fenced old: %v, want a read-only transaction error", err)
		}
	}
	load.stop()
	if n := load.failed.Load(); n > 0 {
		t.Fatalf("%d client transactions failed, last: %v", n, load.lastErr.Load())
	}
}

// TestDryRunChangesNothing: a dry run measures both marker trips and the
// sequence read, and leaves PgBouncer, the fence and the journal as they were.
func TestDryRunChangesNothing(t *testing.T) {
	td := tandemtest.Start(t, 15, 17)
	ctx := context.Background()
	rep, err := switchover.DryRun(ctx, td.SwitchConfig("old"), td.SwitchOptions(t), servicetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != switchover.OutcomeDryRun || rep.ForwardProbe <= 0 || rep.ReverseProbe <= 0 || rep.ExpectedPause < rep.ForwardProbe || rep.Sequences != 6 {
		t.Fatalf("dry run report: %+v", rep)
	}
	admin, err := switchover.NewPgBouncer(td.Bouncer.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	d, err := admin.Database(ctx, tandemtest.Database)
	if err != nil {
		t.Fatal(err)
	}
	if d != nil && (d.Paused || d.Port != td.Old.Port) {
		t.Fatalf("PgBouncer changed by a dry run: %+v", *d)
	}
	old := pgtest.Connect(t, td.Old, tandemtest.Database)
	var switches, settings int
	if err := old.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgtandem.switches), (SELECT count(*) FROM pg_db_role_setting)`).Scan(&switches, &settings); err != nil {
		t.Fatal(err)
	}
	if switches != 0 || settings != 0 {
		t.Fatalf("a dry run left %d switches and %d database settings on old", switches, settings)
	}
}

// TestHookStrategies: the fence and redirect hooks run with the switch's
// environment, in order, and a failing fence hook undoes the switch.
func TestHookStrategies(t *testing.T) {
	td := tandemtest.Start(t, 15, 17)
	ctx := context.Background()
	trace := filepath.Join(t.TempDir(), "hooks.log")
	record := `echo "$PGTANDEM_SWITCH_ACTION $PGTANDEM_SWITCH_CLUSTER $PGTANDEM_SWITCH_FROM>$PGTANDEM_SWITCH_TO $PGTANDEM_SWITCH_HOST:$PGTANDEM_SWITCH_PORT/$PGTANDEM_SWITCH_DBNAME" >> ` + trace
	cfg := td.SwitchConfig("old")
	cfg.Fence = []string{switchover.FencePgBouncer, switchover.FenceHook}
	cfg.Redirect = switchover.RedirectHook
	cfg.Hooks = switchover.Hooks{Fence: record, Unfence: record, Redirect: record}
	if _, err := switchover.Run(ctx, cfg, td.SwitchOptions(t), servicetest.Logger()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	newAt := "127.0.0.1:" + strconv.Itoa(td.New.Port) + "/postgres"
	want := "fence old old>new 127.0.0.1:" + strconv.Itoa(td.Old.Port) + "/postgres\nunfence new old>new " + newAt + "\nredirect new old>new " + newAt + "\n"
	if string(got) != want {
		t.Fatalf("hooks ran:\n%s\nwant:\n%s", got, want)
	}

	// A fence hook that fails: the switch is undone, the unfence hook runs
	// for new's side back to old, PgBouncer is resumed.
	if err := os.Remove(trace); err != nil {
		t.Fatal(err)
	}
	cfg = td.SwitchConfig("new")
	cfg.Fence = []string{switchover.FencePgBouncer, switchover.FenceHook}
	cfg.Redirect = switchover.RedirectNone
	cfg.Hooks = switchover.Hooks{Fence: record + "; echo firewall says no >&2; exit 7", Unfence: record}
	_, err = switchover.Run(ctx, cfg, td.SwitchOptions(t), servicetest.Logger())
	var undone *switchover.UndoneError
	var hookErr *switchover.HookError
	if !errors.As(err, &undone) || undone.Step != switchover.StepFence || !errors.As(err, &hookErr) || !strings.Contains(err.Error(), "firewall says no") {
		t.Fatalf("switch with a failing fence hook: %v, want an UndoneError at fence wrapping the HookError", err)
	}
	got, _ = os.ReadFile(trace)
	if !strings.HasSuffix(string(got), "unfence new new>old "+newAt+"\n") {
		t.Fatalf("hooks ran:\n%s\nwant the unfence of new last", got)
	}
}

// TestDatabaseFenceLeavesNoCommitBehind: clients that bypass PgBouncer and
// write as fast as they can, in single statements and in transaction
// blocks, and reconnect when ended, commit nothing on the source once the
// fence step has ended (before the marker is written). It fails without
// the terminations or without the read-only default; the window in which
// a terminated session that was idle could commit (none, see
// session.fence) is too narrow for a test to hit.
func TestDatabaseFenceLeavesNoCommitBehind(t *testing.T) {
	td := tandemtest.Start(t, 15, 17)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := td.Old.DSN(tandemtest.Database)
	var commits, refused atomic.Int64
	var wg sync.WaitGroup
	for i, stmt := range []string{
		`INSERT INTO ev_big (aid) VALUES (2)`,
		`INSERT INTO ev_big (aid) VALUES (2)`,
		`BEGIN; INSERT INTO ev_big (aid) VALUES (2); INSERT INTO ev_big (aid) VALUES (2); COMMIT`,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				conn, err := pgx.Connect(ctx, dsn+"&application_name=writer"+strconv.Itoa(i))
				if err != nil {
					continue
				}
				for ctx.Err() == nil {
					if _, err := conn.Exec(ctx, stmt); err != nil {
						refused.Add(1)
						break
					}
					commits.Add(1)
				}
				conn.Close(context.Background())
			}
		}()
	}
	testwait.For(t, time.Minute, "the direct writers committing", func() error {
		if n := commits.Load(); n < 300 {
			return fmt.Errorf("%d commits", n)
		}
		return nil
	})
	// pgtandem's own sessions are spared by the fence: this one reads what
	// old holds once the fence has ended, before the marker is written.
	reader, err := pgx.Connect(ctx, dsn+"&application_name=pgtandem-test-reader")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(context.Background())
	// And this one what new holds once the marker arrived: every row old
	// committed, if the marker was written after the last of them.
	newReader, err := pgx.Connect(ctx, td.New.DSN(tandemtest.Database)+"&application_name=pgtandem-test-reader")
	if err != nil {
		t.Fatal(err)
	}
	defer newReader.Close(context.Background())
	count := func(conn *pgx.Conn) (n int64) {
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM ev_big WHERE aid = 2`).Scan(&n); err != nil {
			t.Error(err)
		}
		return n
	}
	written := func() int64 { return count(reader) }
	var atFence, onNewAtMarker int64 = -1, -1
	opts := td.SwitchOptions(t)
	opts.AfterStep = func(step string) {
		switch step {
		case switchover.StepFence:
			atFence = written()
		case switchover.StepMarker:
			onNewAtMarker = count(newReader)
		}
	}
	rep, err := switchover.Run(ctx, td.SwitchConfig("old"), opts, servicetest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	final := written()
	t.Logf("direct writers: %d commits, %d refused; %d sessions terminated by the fence (%s); %d rows at the fence's end, %d at the end, %d on new once the marker arrived",
		commits.Load(), refused.Load(), rep.Terminated, rep.Steps[0].Detail, atFence, final, onNewAtMarker)
	if rep.Terminated < 3 {
		t.Errorf("the fence terminated %d sessions, want the 3 writers at least", rep.Terminated)
	}
	if final != atFence {
		t.Fatalf("old committed %d rows of the direct writers after the fence step ended", final-atFence)
	}
	if onNewAtMarker != final {
		t.Fatalf("new held %d rows of the direct writers when the marker arrived, old committed %d: the marker was written before a commit", onNewAtMarker, final)
	}
}
