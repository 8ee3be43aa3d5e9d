package tests

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

var errNotYet = errors.New("not yet")

// TestInitResumesAfterKill9 kills `pgtandem init` with SIGKILL in the middle
// of its copy, under a write load: the slot stays, and running init again
// keeps the table it had committed, copies the others, and streaming then
// brings the target to equal with the source (pgtandem verify exits 0).
func TestInitResumesAfterKill9(t *testing.T) {
	ctx := context.Background()
	src, dst := pgtest.Start(t, 15), pgtest.Start(t, 17)
	b := brokertest.Start(t)
	srcConn, dstConn := pgtest.Connect(t, src, "postgres"), pgtest.Connect(t, dst, "postgres")
	// accounts is copied first; the slow tables (1 MB values, small on
	// disk) keep both jobs busy long enough to kill init between the two.
	if _, err := srcConn.Exec(ctx, `
		CREATE TABLE accounts (id int PRIMARY KEY, v text);
		INSERT INTO accounts SELECT g, md5(g::text) FROM generate_series(1, 40000) g;
		CREATE TABLE slow_a (id int PRIMARY KEY, blob text);
		CREATE TABLE slow_b (id int PRIMARY KEY, blob text);
		INSERT INTO slow_a SELECT g, repeat(chr(64 + g % 26), 1000000) FROM generate_series(1, 100) g;
		INSERT INTO slow_b SELECT g, repeat(chr(64 + g % 26), 1000000) FROM generate_series(1, 100) g;
		CREATE TABLE load (txn int, i int, pad text, PRIMARY KEY (txn, i));
		CREATE TABLE marker (n int PRIMARY KEY);
		ANALYZE`); err != nil {
		t.Fatal(err)
	}
	env := directionEnv(src, dst, b, "persistent://public/default/init-kill9")
	load := startLoad(t, src)

	cmd := startPgtandem(t, env, "init", "--from", "src", "--to", "dst", "--jobs", "2")
	testwait.For(t, time.Minute, "accounts copied while the slow tables are not", func() error {
		var accounts, slow bool
		err := dstConn.QueryRow(ctx, `SELECT bool_or(table_name = 'accounts'), bool_or(table_name LIKE 'slow%') FROM pgtandem.init_tables`).Scan(&accounts, &slow)
		switch {
		case err != nil:
			return err
		case slow:
			t.Fatal("the slow tables were copied before init could be killed")
		case !accounts:
			return errNotYet
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var phase string
	var slot bool
	if err := dstConn.QueryRow(ctx, `SELECT phase FROM pgtandem.init_state`).Scan(&phase); err != nil || phase != "copy" {
		t.Fatalf("init_state after kill -9: %q, %v", phase, err)
	}
	if err := srcConn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgtandem_src')`).Scan(&slot); err != nil || !slot {
		t.Fatalf("slot gone after kill -9 (%v)", err)
	}

	time.Sleep(300 * time.Millisecond)
	resume := exec.Command(pgtandemBin, "init", "--from", "src", "--to", "dst", "--jobs", "2")
	resume.Env = env
	out, err := resume.CombinedOutput()
	if err != nil {
		t.Fatalf("resumed init: %v\n%s", err, out)
	}
	for _, want := range []string{"public.accounts", "kept from the interrupted run", "resumed an interrupted init: 1 tables kept"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("resumed init output lacks %q:\n%s", want, out)
		}
	}

	startCapture(t, env)
	startApply(t, env)
	time.Sleep(time.Second)
	load.stop(t)
	if _, err := srcConn.Exec(ctx, `INSERT INTO marker VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 2*time.Minute, "marker on the target", func() error {
		var n int
		if err := dstConn.QueryRow(ctx, `SELECT count(*) FROM marker`).Scan(&n); err != nil || n == 0 {
			return errNotYet
		}
		return nil
	})
	if err := eventtest.SameRows(srcConn, dstConn, "load"); err != nil {
		t.Fatal(err)
	}
	verify := exec.Command(pgtandemBin, "verify", "--from", "src", "--to", "dst")
	verify.Env = env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("verify after the resumed init: %v\n%s", err, out)
	}
}
