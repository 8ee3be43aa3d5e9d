package bootstrap_test

import (
	"context"
	"testing"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/verify"
)

// withDefaults has column defaults whose constants pg_dump prints and
// pg_restore reads back: money in the source's lc_monetary, a date and an
// interval written in the source's DateStyle and IntervalStyle.
const withDefaults = `
CREATE TABLE with_defaults (id int PRIMARY KEY, m money DEFAULT '12,34', d date DEFAULT '22/07/2024',
  iv interval DEFAULT '-1 2:03:04', f float8 DEFAULT 0.30000000000000004);
INSERT INTO with_defaults (id) VALUES (1);
`

// TestInitWhateverSessionDefaults: init copies (schema with pg_dump and
// pg_restore, rows with COPY) from a source into a target whose server,
// database and role defaults for every setting that shapes a value's text
// form are different and odd, and the copy holds exactly the source's
// values; verify finds both equal.
func TestInitWhateverSessionDefaults(t *testing.T) {
	ctx := context.Background()
	src := pgtest.Start(t, 15, eventtest.OddSource.Options()...)
	dst := pgtest.Start(t, 17, eventtest.OddTarget.Options()...)
	eventtest.OddSource.Set(t, src)
	eventtest.OddTarget.Set(t, dst)
	// A session opened now starts in the source's odd defaults.
	if _, err := pgtest.Connect(t, src, "postgres").Exec(ctx, eventtest.SettingsSchema+withDefaults+eventtest.SettingsRows); err != nil {
		t.Fatal(err)
	}

	cfg := bootstrap.Config{Source: "old", SourceDSN: src.DSN("postgres"), TargetDSN: dst.DSN("postgres"),
		Topic: "persistent://public/default/init-settings", Jobs: 2}
	if _, err := bootstrap.Copy(ctx, cfg, servicetest.Logger()); err != nil {
		t.Fatal(err)
	}

	srcPinned, dstPinned := eventtest.ConnectPinned(t, src), eventtest.ConnectPinned(t, dst)
	// A row that takes the defaults as each side holds them: the target's
	// came through pg_dump and pg_restore.
	if _, err := srcPinned.Exec(ctx, `INSERT INTO with_defaults (id) VALUES (2)`); err != nil {
		t.Fatalf("source: %v", err)
	}
	if _, err := dstPinned.Exec(ctx, `INSERT INTO with_defaults (id) VALUES (2)`); err != nil {
		t.Fatalf("target: %v", err)
	}
	tables := append([]string{"with_defaults"}, eventtest.SettingsTables...)
	if err := eventtest.SameRows(srcPinned, dstPinned, tables...); err != nil {
		t.Fatal(err)
	}
	if err := eventtest.CheckSettingsValues(dstPinned, false); err != nil {
		t.Fatalf("target: %v", err)
	}
	var defaults string
	if err := dstPinned.QueryRow(ctx, `SELECT string_agg(w::text, ' ' ORDER BY id) FROM with_defaults w`).Scan(&defaults); err != nil {
		t.Fatal(err)
	}
	if want := `(1,$12.34,2024-07-22,"-1 days -02:03:04",0.30000000000000004) (2,$12.34,2024-07-22,"-1 days -02:03:04",0.30000000000000004)`; defaults != want {
		t.Fatalf("target with_defaults: %s, want %s", defaults, want)
	}

	vcfg := verify.DefaultConfig()
	vcfg.SourceDSN, vcfg.TargetDSN = src.DSN("postgres"), dst.DSN("postgres")
	report, err := verify.Run(ctx, vcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !report.Equal() {
		for _, tr := range report.Tables {
			if tr.Status != verify.StatusEqual {
				t.Errorf("%s: %d source rows, %d target rows, rows %+v", tr.Table, tr.SourceRows, tr.TargetRows, tr.Rows)
			}
		}
		t.Fatalf("verify: source and target differ after init: schema %+v", report.Schema)
	}
}
