package bootstrap_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// TestCloneHandoff builds the target the way large upgrades do: a physical
// copy (pg_basebackup) recovered up to the slot's LSN with the settings
// init --mode clone prints, then --finish records the handoff, and
// streaming from the slot brings it to equal with the source under load.
func TestCloneHandoff(t *testing.T) {
	ctx := context.Background()
	src := pgtest.Start(t, 15)
	b := brokertest.Start(t)
	if _, err := pgtest.Connect(t, src, "postgres").Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	stopLoad := load(t, src)

	// The copy is taken first: its recovery then replays up to the slot's
	// point from the source's WAL, streaming as a standby.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/lib/postgresql/15/bin/pg_basebackup", "-d", src.DSN("postgres"), "-D", filepath.Join(dir, "data"), "-X", "stream", "-R", "-c", "fast").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	waitLoadCommit(t, src) // changes after the copy, before the slot
	topic := "persistent://public/default/clone"
	cfg := bootstrap.Config{Source: "old", SourceDSN: src.DSN("postgres"), Topic: topic, Jobs: 2}
	plan, err := bootstrap.PrepareClone(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	auto, err := os.OpenFile(filepath.Join(dir, "data", "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auto.WriteString(strings.Join(plan.RecoverySettings, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	auto.Close()

	clone, err := pglocal.Start(ctx, pglocal.Options{Major: 15, Dir: dir, Settings: map[string]string{"fsync": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clone log:\n%s", clone.LogTail(60))
		}
		_ = clone.Remove(context.Background())
	})
	cloneConn := pgtest.Connect(t, clone, "postgres")
	testwait.For(t, time.Minute, "the clone promoted at the recovery target", func() error {
		var inRecovery bool
		if err := cloneConn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
			return err
		}
		if inRecovery {
			return errors.New("still in recovery")
		}
		return nil
	})
	cfg.TargetDSN = clone.DSN("postgres")
	if err := bootstrap.FinishClone(ctx, cfg, plan.SlotLSN); err != nil {
		t.Fatal(err)
	}

	streamAndVerify(t, src, clone, b.URL(), topic, stopLoad)
}
