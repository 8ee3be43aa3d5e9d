package pgtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/pgtest"
)

// TestMajors starts every major the project supports through the harness and
// checks that each answers as the version asked for, ready for logical
// decoding.
func TestMajors(t *testing.T) {
	for _, major := range []int{13, 14, 15, 16, 17, 18} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			srv := pgtest.Start(t, major)
			conn := pgtest.Connect(t, srv, "postgres")
			ctx := context.Background()

			var versionNum int
			if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum); err != nil {
				t.Fatal(err)
			}
			if got := versionNum / 10000; got != major {
				t.Fatalf("asked for PostgreSQL %d, server_version_num is %d", major, versionNum)
			}
			var walLevel string
			if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
				t.Fatal(err)
			}
			if walLevel != "logical" {
				t.Fatalf("wal_level = %q, want logical", walLevel)
			}
			// pgoutput must load: create and drop a slot with it.
			if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('pgtest_probe', 'pgoutput')"); err != nil {
				t.Fatalf("create pgoutput slot: %v", err)
			}
			if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot('pgtest_probe')"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestKillAndRestart checks the crash helper: a killed server loses nothing
// committed and starts again over the same data directory.
func TestKillAndRestart(t *testing.T) {
	srv := pgtest.Start(t, 17)
	ctx := context.Background()
	conn := pgtest.Connect(t, srv, "postgres")
	if _, err := conn.Exec(ctx, "CREATE TABLE survivor (id int); INSERT INTO survivor VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if srv.Running() {
		t.Fatal("server still running after Kill")
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn = pgtest.Connect(t, srv, "postgres")
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM survivor").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("rows after crash = %d, want 1", n)
	}
}

// TestRestartCancelledLeavesNothingRunning: a start whose context ends
// while pg_ctl waits for the server must not leave that server behind.
func TestRestartCancelledLeavesNothingRunning(t *testing.T) {
	srv := pgtest.Start(t, 17)
	bg := context.Background()
	cancelled := 0
	// The durations spread over the whole start, so that some cancel pg_ctl
	// after it forked the postmaster but before that wrote postmaster.pid.
	for d := 5 * time.Millisecond; d <= 200*time.Millisecond; d += 15 * time.Millisecond {
		if err := srv.Stop(bg); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(bg, d)
		err := srv.Restart(ctx)
		cancel()
		if err == nil {
			continue
		}
		cancelled++
		if srv.Running() {
			t.Fatalf("start cancelled after %s left the server running", d)
		}
	}
	if cancelled == 0 {
		t.Fatal("no start was cancelled: the test did not exercise the cancelled path")
	}
	// The last start may have finished in time.
	if err := srv.Stop(bg); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(bg); err != nil {
		t.Fatalf("start after cancelled starts: %v", err)
	}
}
