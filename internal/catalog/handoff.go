package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// TableHandoff says that every change of one table committed at or before
// After is already in the target. The table is named as events name it: a
// partitioned table by its root when the publication publishes through it.
//
// Per-table handoffs come from a resumed `pgtandem init`: the tables an
// interrupted run had not finished are copied in a snapshot of their own,
// later than the slot's consistent point (the handoff in apply_progress).
// The topic still carries every change since that point, but the changes of
// such a table committed before its snapshot are already in its copy and
// must be skipped, while the tables copied in the first snapshot need them.
// This is how PostgreSQL's own logical replication synchronises a table: the
// table sync worker copies it in the snapshot of a temporary slot, and the
// apply worker skips the table's changes up to the LSN the sync reached
// (should_apply_changes_for_rel in worker.c).
type TableHandoff struct {
	Schema, Table string
	After         pglogrepl.LSN
}

// RecordTableHandoffs replaces the per-table handoffs of source by handoffs
// (none clears them, as a new copy starts a new history). Call it in the
// target transaction that records the handoff itself.
func RecordTableHandoffs(ctx context.Context, conn *pgx.Conn, source string, handoffs []TableHandoff) error {
	if err := Migrate(ctx, conn); err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM pgtandem.table_handoff WHERE source_cluster = $1`, source)
	for _, h := range handoffs {
		b.Queue(`INSERT INTO pgtandem.table_handoff (source_cluster, schema_name, table_name, after_lsn) VALUES ($1, $2, $3, $4)`,
			source, h.Schema, h.Table, h.After)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("record the per-table handoffs of %s in pgtandem.table_handoff: %w", source, err)
	}
	return nil
}

// ReadTableHandoffs returns the per-table handoffs of source, none when the
// target has no pgtandem.table_handoff (an init that did not resume).
func ReadTableHandoffs(ctx context.Context, conn *pgx.Conn, source string) ([]TableHandoff, error) {
	rows, err := conn.Query(ctx, `SELECT schema_name, table_name, after_lsn FROM pgtandem.table_handoff WHERE source_cluster = $1`, source)
	if err == nil {
		var out []TableHandoff
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[TableHandoff])
		if err == nil {
			return out, nil
		}
	}
	if missingRelation(err) {
		return nil, nil
	}
	return nil, fmt.Errorf("read pgtandem.table_handoff: %w", err)
}
