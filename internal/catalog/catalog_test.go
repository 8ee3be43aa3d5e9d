package catalog_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pglogrepl"
	"golang.org/x/sync/errgroup"

	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pgtest"
)

func TestNames(t *testing.T) {
	for name, want := range map[string]string{
		catalog.SlotName("old"):                              "pgtandem_old",
		catalog.OriginName("old"):                            "pgtandem_old",
		catalog.ProducerName("old"):                          "pgtandem-old",
		catalog.SubscriptionName("new"):                      "pgtandem-new",
		catalog.Topic("persistent://public/default/app", 17): "persistent://public/default/app-pg17",
	} {
		if name != want {
			t.Errorf("got %q, want %q", name, want)
		}
	}
	for _, bad := range []string{"", "Old", "1old", "old-new", "old new"} {
		var ce *catalog.ClusterNameError
		if err := catalog.ValidateClusterName(bad); !errors.As(err, &ce) {
			t.Errorf("ValidateClusterName(%q) = %v, want a *ClusterNameError", bad, err)
		}
	}
	if err := catalog.ValidateClusterName("old_15"); err != nil {
		t.Errorf("ValidateClusterName(old_15) = %v", err)
	}
	if !catalog.IsBookkeeping("pgtandem", "apply_progress") || !catalog.IsBookkeeping("pgtandem", "schema_version") ||
		catalog.IsBookkeeping("public", "apply_progress") || catalog.IsBookkeeping("pgtandem", "marker") {
		t.Error("IsBookkeeping classifies wrongly")
	}
	if !catalog.IsInBand("pgtandem", "switch_marker") || !catalog.IsInBand("pgtandem", "cursor") ||
		catalog.IsInBand("pgtandem", "apply_progress") || catalog.IsInBand("public", "switch_marker") {
		t.Error("IsInBand classifies wrongly")
	}
}

// TestMigrate: a fresh cluster, a cluster written before the schema had a
// version, concurrent migrations, a migration inside a caller's transaction
// that rolls back, and a schema of a newer pgtandem.
func TestMigrate(t *testing.T) {
	srv := pgtest.Start(t, 15)
	ctx := context.Background()
	conn := pgtest.Connect(t, srv, "postgres")

	// Written by a pgtandem without a schema version: the table exists.
	if _, err := conn.Exec(ctx, `CREATE SCHEMA pgtandem; CREATE TABLE pgtandem.apply_progress (source_cluster text PRIMARY KEY, topic text NOT NULL,
		source_system text, commit_lsn pg_lsn NOT NULL, end_lsn pg_lsn, message_id text, commit_time timestamptz, applied_at timestamptz,
		blocked_reason text, blocked_since timestamptz); INSERT INTO pgtandem.apply_progress VALUES ('old', 't', NULL, '0/10')`); err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	for range 4 {
		g.Go(func() error {
			c := pgtest.Connect(t, srv, "postgres")
			return catalog.Migrate(ctx, c)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	var version int
	if err := conn.QueryRow(ctx, `SELECT version FROM pgtandem.schema_version`).Scan(&version); err != nil || version != catalog.SchemaVersion {
		t.Fatalf("schema version %d (%v), want %d", version, err, catalog.SchemaVersion)
	}
	all, err := catalog.ReadProgress(ctx, conn)
	if err != nil || len(all) != 1 || all[0].CommitLSN != 0x10 {
		t.Fatalf("ReadProgress after migrating = %+v, %v; want the row kept at 0/10", all, err)
	}

	// Inside a transaction that rolls back, the handoff and its tables go.
	fresh := pgtest.Connect(t, srv, "postgres")
	if _, err := fresh.Exec(ctx, `CREATE DATABASE tx`); err != nil {
		t.Fatal(err)
	}
	txConn := pgtest.Connect(t, srv, "tx")
	tx, err := txConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lsn, _ := pglogrepl.ParseLSN("1/ABCDEF00")
	if err := catalog.RecordHandoff(ctx, tx.Conn(), "old", "topic", "42", lsn); err != nil {
		t.Fatalf("RecordHandoff in a transaction: %v", err)
	}
	handoffs := []catalog.TableHandoff{{Schema: "public", Table: "a", After: lsn + 8}}
	if err := catalog.RecordTableHandoffs(ctx, tx.Conn(), "old", handoffs); err != nil {
		t.Fatal(err)
	}
	got, err := catalog.ReadTableHandoffs(ctx, tx.Conn(), "old")
	if err != nil || len(got) != 1 || got[0] != handoffs[0] {
		t.Fatalf("ReadTableHandoffs = %+v, %v; want %+v", got, err, handoffs)
	}
	p, err := catalog.ReadProgress(ctx, tx.Conn())
	if err != nil || len(p) != 1 || p[0].CommitLSN != lsn || p[0].SourceSystem != "42" {
		t.Fatalf("ReadProgress in the transaction = %+v, %v", p, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := catalog.ReadProgress(ctx, txConn); err != nil || len(p) != 0 {
		t.Fatalf("ReadProgress after rollback = %+v, %v; want none", p, err)
	}
	if h, err := catalog.ReadTableHandoffs(ctx, txConn, "old"); err != nil || len(h) != 0 {
		t.Fatalf("ReadTableHandoffs after rollback = %+v, %v; want none", h, err)
	}

	// A newer pgtandem's schema is refused, not written over.
	if _, err := conn.Exec(ctx, `UPDATE pgtandem.schema_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	var tooNew *catalog.SchemaTooNewError
	if err := catalog.Migrate(ctx, conn); !errors.As(err, &tooNew) || tooNew.Found != catalog.SchemaVersion+1 {
		t.Fatalf("Migrate of a newer schema = %v, want a *SchemaTooNewError", err)
	}
}
