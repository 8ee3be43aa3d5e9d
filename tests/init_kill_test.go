package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

var errNotYet = errors.New("not yet")

// initKillTables are the source's tables in TestInitResumesAfterKill9.
var initKillTables = []string{"accounts", "load", "marker", "slow_a", "slow_b"}

// TestInitResumesAfterKill9 kills `pgtandem init` with SIGKILL in the middle
// of its copy, under a write load: once a table is committed on the target
// while a slow table is still being copied. The slot stays, and running init
// again keeps exactly the tables pgtandem.init_tables holds as committed
// (their rows are not written again), copies the others, and streaming then
// brings the target to equal with the source (pgtandem verify exits 0).
func TestInitResumesAfterKill9(t *testing.T) {
	ctx := context.Background()
	src, dst := pgtest.Start(t, 15), pgtest.Start(t, 17)
	b := brokertest.Start(t)
	srcConn, dstConn := pgtest.Connect(t, src, "postgres"), pgtest.Connect(t, dst, "postgres")
	// The slow tables (1 MB values, small on disk, so not copied first)
	// take seconds of COPY each: init is killed during one of them.
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
	// Less than half of a slow table's rows: the rest takes far longer than
	// the kill that follows.
	testwait.For(t, 2*time.Minute, "a table committed on the target while a slow table's copy is under way", func() error {
		var committed, slowCopies int
		err := dstConn.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM pgtandem.init_tables),
			       (SELECT count(*) FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid
			         WHERE p.command = 'COPY FROM' AND c.relname IN ('slow_a', 'slow_b') AND p.tuples_processed < 50
			           AND c.relname NOT IN (SELECT table_name FROM pgtandem.init_tables))`).Scan(&committed, &slowCopies)
		if err != nil {
			return err
		}
		if committed == 0 || slowCopies == 0 {
			return fmt.Errorf("%d parts committed, %d slow copies under way: %w", committed, slowCopies, errNotYet)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killedAfter := load.committed()

	// A COMMIT the killed process sent may still be under way on the
	// target: init_tables is final once its sessions are gone. The slot is
	// free for the resume once its replication connection is.
	testwait.For(t, time.Minute, "the killed init's sessions gone from the target", func() error {
		var others int
		if err := dstConn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&others); err != nil {
			return err
		}
		if others > 0 {
			return fmt.Errorf("%d sessions left: %w", others, errNotYet)
		}
		return nil
	})
	testwait.For(t, time.Minute, "slot pgtandem_src kept and inactive", func() error {
		var active bool
		err := srcConn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = 'pgtandem_src'`).Scan(&active)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			t.Fatal("slot pgtandem_src gone after kill -9")
		case err != nil:
			return err
		}
		if active {
			return fmt.Errorf("still active: %w", errNotYet)
		}
		return nil
	})
	var phase string
	if err := dstConn.QueryRow(ctx, `SELECT phase FROM pgtandem.init_state`).Scan(&phase); err != nil || phase != "copy" {
		t.Fatalf("init_state after kill -9: %q, %v", phase, err)
	}
	// What init_tables holds as committed, every part of it, is what the
	// resume must keep; the rest it must copy.
	rows, _ := dstConn.Query(ctx, `SELECT table_name FROM pgtandem.init_tables GROUP BY schema_name, table_name HAVING count(*) = max(parts) ORDER BY 1`)
	wantKept, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	wantCopied := slices.DeleteFunc(slices.Clone(initKillTables), func(name string) bool { return slices.Contains(wantKept, name) })
	if len(wantKept) == 0 || len(wantCopied) == 0 {
		t.Fatalf("after kill -9 the target holds %v as committed: want some tables but not all of %v", wantKept, initKillTables)
	}
	fingerprints := map[string]string{}
	for _, name := range wantKept {
		fingerprints[name] = xminFingerprint(t, dstConn, name)
	}

	testwait.For(t, time.Minute, "load transactions committed after the kill", func() error {
		if n := load.committed(); n <= killedAfter {
			return fmt.Errorf("%d committed, as at the kill: %w", n, errNotYet)
		}
		return nil
	})
	resume := exec.Command(pgtandemBin, "init", "--from", "src", "--to", "dst", "--jobs", "2")
	resume.Env = env
	var stdout, stderr bytes.Buffer
	resume.Stdout, resume.Stderr = &stdout, &stderr
	if err := resume.Run(); err != nil {
		t.Fatalf("resumed init: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	kept, copied := initReport(stdout.String())
	if want := fmt.Sprintf("resumed an interrupted init: %d tables kept", len(wantKept)); !strings.Contains(stdout.String(), want) ||
		!slices.Equal(kept, wantKept) || !slices.Equal(copied, wantCopied) {
		t.Fatalf("resumed init reports %v kept and %v copied; init_tables held %v before, so want %q and %v copied:\n%s%s",
			kept, copied, wantKept, want, wantCopied, stdout.String(), stderr.String())
	}
	t.Logf("killed with %v committed; the resumed init kept them and copied %v", wantKept, wantCopied)
	for name, before := range fingerprints {
		if after := xminFingerprint(t, dstConn, name); after != before {
			t.Errorf("%s was copied again by the resumed init: %s before, %s after", name, before, after)
		}
	}

	startCapture(t, env)
	startApply(t, env)
	var underLoad pglogrepl.LSN
	if err := srcConn.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&underLoad); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 2*time.Minute, "the target applying the load past "+underLoad.String(), func() error {
		var applied pglogrepl.LSN
		if err := dstConn.QueryRow(ctx, `SELECT commit_lsn FROM pgtandem.apply_progress WHERE source_cluster = 'src'`).Scan(&applied); err != nil {
			return err
		}
		if applied < underLoad {
			return fmt.Errorf("applied up to %s: %w", applied, errNotYet)
		}
		return nil
	})
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

// initReport reads the table init prints: the public tables it kept from
// the interrupted run and those it copied, each sorted.
func initReport(out string) (kept, copied []string) {
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		name, ok := strings.CutPrefix(fields[0], "public.")
		switch {
		case !ok:
		case strings.Contains(line, "kept from the interrupted run"):
			kept = append(kept, name)
		default:
			copied = append(copied, name)
		}
	}
	slices.Sort(kept)
	slices.Sort(copied)
	return kept, copied
}

// xminFingerprint identifies the transactions that wrote a table's rows:
// it changes when the rows are written again.
func xminFingerprint(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var fp string
	if err := conn.QueryRow(context.Background(), `SELECT count(*) || ' rows, xmin sum ' || coalesce(sum(xmin::text::bigint), 0) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&fp); err != nil {
		t.Fatal(err)
	}
	return fp
}
