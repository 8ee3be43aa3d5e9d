package broker2pg

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// tableHandoffs maps a table, as events name it, to its handoff.
type tableHandoffs map[event.TableName]event.LSN

// readTableHandoffs loads the per-table handoffs of source
// (catalog.TableHandoff).
func readTableHandoffs(ctx context.Context, conn *pgx.Conn, source string) (tableHandoffs, error) {
	all, err := catalog.ReadTableHandoffs(ctx, conn, source)
	if err != nil || len(all) == 0 {
		return nil, err
	}
	h := make(tableHandoffs, len(all))
	for _, t := range all {
		h[event.TableName{Schema: t.Schema, Table: t.Table}] = event.LSN(t.After)
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
