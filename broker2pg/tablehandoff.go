package broker2pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/internal/event"
)

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
const tableHandoffDDL = `
CREATE SCHEMA IF NOT EXISTS pgtandem;
CREATE TABLE IF NOT EXISTS pgtandem.table_handoff (
	source_cluster text NOT NULL,
	schema_name    text NOT NULL,
	table_name     text NOT NULL,
	after_lsn      pg_lsn NOT NULL,
	PRIMARY KEY (source_cluster, schema_name, table_name)
)`

// TableHandoff says that every change of one table committed at or before
// After is already in the target. The table is named as events name it: a
// partitioned table by its root when the publication publishes through it.
type TableHandoff struct {
	Schema, Table string
	After         pglogrepl.LSN
}

// RecordTableHandoffs replaces the per-table handoffs of source by handoffs
// (none clears them, as a new copy starts a new history). Call it in the
// target transaction that records the handoff itself.
func RecordTableHandoffs(ctx context.Context, conn *pgx.Conn, source string, handoffs []TableHandoff) error {
	if _, err := conn.Exec(ctx, tableHandoffDDL); err != nil {
		return fmt.Errorf("create pgtandem.table_handoff on the target: %w", err)
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM pgtandem.table_handoff WHERE source_cluster = $1`, source)
	for _, h := range handoffs {
		b.Queue(`INSERT INTO pgtandem.table_handoff (source_cluster, schema_name, table_name, after_lsn) VALUES ($1, $2, $3, $4::pg_lsn)`,
			source, h.Schema, h.Table, h.After.String())
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("record the per-table handoffs of %s in pgtandem.table_handoff: %w", source, err)
	}
	return nil
}

// tableHandoffs maps a table, as events name it, to its handoff.
type tableHandoffs map[event.TableName]event.LSN

// readTableHandoffs loads the per-table handoffs of source, none when the
// target has no pgtandem.table_handoff (an init that did not resume, or one
// of a version without it).
func readTableHandoffs(ctx context.Context, conn *pgx.Conn, source string) (tableHandoffs, error) {
	rows, err := conn.Query(ctx, `SELECT schema_name, table_name, after_lsn::text FROM pgtandem.table_handoff WHERE source_cluster = $1`, source)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.table_handoff: %w", err)
	}
	h := tableHandoffs{}
	var name event.TableName
	var after string
	_, err = pgx.ForEachRow(rows, []any{&name.Schema, &name.Table, &after}, func() error {
		lsn, err := pglogrepl.ParseLSN(after)
		h[name] = event.LSN(lsn)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.table_handoff: %w", err)
	}
	return h, nil
}

// skip reports whether the change ev is already in the copy of its table. A
// TRUNCATE keeps only the tables whose copy does not have it yet, and is
// skipped when none is left.
func (h tableHandoffs) skip(ev *event.Event) bool {
	if len(h) == 0 {
		return false
	}
	copied := func(name event.TableName) bool {
		after, ok := h[name]
		return ok && ev.LSN <= after
	}
	switch ev.Kind {
	case event.KindInsert, event.KindUpdate, event.KindDelete:
		return copied(ev.QualifiedTable())
	case event.KindTruncate:
		var left []event.TableName
		for _, name := range ev.Tables {
			if !copied(name) {
				left = append(left, name)
			}
		}
		ev.Tables = left
		return len(left) == 0
	}
	return false
}
