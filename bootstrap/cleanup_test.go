package bootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
)

// TestInitSaysWhatToClean drives init into every state it cannot continue
// from and requires a CleanupError naming the phase and the exact steps:
// the slot to drop only when it exists, the database to recreate.
func TestInitSaysWhatToClean(t *testing.T) {
	ctx := context.Background()
	src := pgtest.Start(t, 15)
	srcConn := pgtest.Connect(t, src, "postgres")
	if _, err := srcConn.Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, v text); CREATE INDEX items_v ON items (v);
		INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	config := func(dst *pglocal.Server) bootstrap.Config {
		return bootstrap.Config{Source: "old", Target: "new", SourceDSN: src.DSN("postgres"), TargetDSN: dst.DSN("postgres"),
			Topic: "persistent://public/default/init-cleanup", Jobs: 2}
	}
	const dropSlot = "on old: SELECT pg_drop_replication_slot('pgtandem_old')"
	const recreate = `on new, connected to another database: DROP DATABASE "postgres"; CREATE DATABASE "postgres" OWNER "postgres"`
	expect := func(t *testing.T, err error, phase string, slotStep bool, want ...string) {
		t.Helper()
		var ce *bootstrap.CleanupError
		if !errors.As(err, &ce) {
			t.Fatalf("got %v, want a CleanupError", err)
		}
		if ce.Phase != phase {
			t.Errorf("phase %q, want %q", ce.Phase, phase)
		}
		if has := strings.Contains(err.Error(), dropSlot); has != slotStep {
			t.Errorf("error names the slot drop: %v, want %v: %s", has, slotStep, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error does not say %q: %s", w, err)
			}
		}
	}
	slotExists := func(t *testing.T) bool {
		t.Helper()
		var exists bool
		if err := srcConn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgtandem_old')`).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		return exists
	}

	t.Run("schema restore fails", func(t *testing.T) {
		dst := pgtest.Start(t, 17)
		cfg := config(dst)
		cfg.PgDump = failingTools(t, "pre-data")
		_, err := bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "schema", false, "injected failure", recreate, "run `pgtandem init --from old --to new` again")
		cfg.PgDump = ""
		_, err = bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "schema", false, "stopped while restoring the tables", recreate)

		// A slot no init recorded (pg2broker --create-slot, an older
		// pgtandem) is never taken over.
		if _, err := pgtest.Connect(t, dst, "postgres").Exec(ctx, `DELETE FROM pgtandem.init_state`); err != nil {
			t.Fatal(err)
		}
		if _, err := srcConn.Exec(ctx, `SELECT pg_create_logical_replication_slot('pgtandem_old', 'pgoutput')`); err != nil {
			t.Fatal(err)
		}
		var se *bootstrap.SlotExistsError
		if _, err := bootstrap.Copy(ctx, cfg, servicetest.Logger()); !errors.As(err, &se) {
			t.Fatalf("init with a slot it did not record: %v, want a SlotExistsError", err)
		}
		if _, err := srcConn.Exec(ctx, `SELECT pg_drop_replication_slot('pgtandem_old')`); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("index build fails", func(t *testing.T) {
		cfg := config(pgtest.Start(t, 17))
		cfg.PgDump = failingTools(t, "post-data")
		_, err := bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "post-data", false, "the slot pgtandem_old was dropped, so it holds no WAL", "injected failure", recreate)
		if slotExists(t) {
			t.Fatal("slot left after a failed post-data")
		}
		cfg.PgDump = ""
		_, err = bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "post-data", false, "stopped while building indexes", recreate)
	})

	t.Run("slot not recorded, streamed from, gone", func(t *testing.T) {
		dst := pgtest.Start(t, 17)
		dstConn := pgtest.Connect(t, dst, "postgres")
		cfg := config(dst)
		res, err := bootstrap.Copy(ctx, cfg, servicetest.Logger())
		if err != nil {
			t.Fatal(err)
		}
		// What a run killed during the copy leaves, in its variants, made
		// from the state of a finished one.
		state := func(sql string, args ...any) {
			t.Helper()
			if _, err := dstConn.Exec(ctx, sql, args...); err != nil {
				t.Fatal(err)
			}
		}
		state(`UPDATE pgtandem.init_state SET phase = 'copy', consistent_lsn = NULL`)
		_, err = bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "copy", true, "created the slot pgtandem_old but stopped before recording it", "keeps the tables it restored")

		state(`UPDATE pgtandem.init_state SET consistent_lsn = $1`, res.HandoffLSN)
		for _, sql := range []string{`INSERT INTO items VALUES (0, 'moved')`, `SELECT pg_replication_slot_advance('pgtandem_old', pg_current_wal_lsn())`} {
			if _, err := srcConn.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		_, err = bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "copy", true, "was streamed from before init finished", recreate)

		if _, err := srcConn.Exec(ctx, `SELECT pg_drop_replication_slot('pgtandem_old')`); err != nil {
			t.Fatal(err)
		}
		_, err = bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "copy", false, "the slot pgtandem_old no longer exists", recreate)

		state(`UPDATE pgtandem.init_state SET phase = 'done'`)
		_, err = bootstrap.Copy(ctx, cfg, servicetest.Logger())
		expect(t, err, "done", false, "init finished, but the slot pgtandem_old no longer exists", recreate)

		state(`DELETE FROM pgtandem.init_state`)
		var se *bootstrap.SchemaExistsError
		if _, err := bootstrap.Copy(ctx, cfg, servicetest.Logger()); !errors.As(err, &se) || !strings.Contains(err.Error(), "public.items") {
			t.Fatalf("fresh init into a target with the source's tables: %v, want a SchemaExistsError naming public.items", err)
		}
	})
}

// failingTools returns a pg_dump whose pg_restore fails the given section,
// as a restore that meets an error does.
func failingTools(t *testing.T, section string) string {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
	if len(found) == 0 {
		t.Skip("no pg_dump under /usr/lib/postgresql")
	}
	real := filepath.Dir(found[len(found)-1])
	dir := t.TempDir()
	scripts := map[string]string{
		"pg_dump": fmt.Sprintf("#!/bin/sh\nexec %s/pg_dump \"$@\"\n", real),
		"pg_restore": fmt.Sprintf("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --section=%s ] && { echo 'pg_restore: error: injected failure' >&2; exit 1; }; done\nexec %s/pg_restore \"$@\"\n",
			section, real),
	}
	for name, script := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "pg_dump")
}
