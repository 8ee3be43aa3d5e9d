package bootstrap

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// finish records the handoff, the per-table handoffs and the end of the
// init in one target transaction.
func (r *run) finish(ctx context.Context, st *initState) error {
	tx, err := r.dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("init: record the handoff on the target: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := catalog.RecordTableHandoffs(ctx, tx.Conn(), r.cfg.Source, tableHandoffs(st.consistent, r.snapshots)); err != nil {
		return err
	}
	// Every transaction that committed before the consistent point is in
	// the snapshot; one that commits right at it is decoded, so the handoff
	// is the position just before.
	if err := catalog.RecordHandoff(ctx, tx.Conn(), r.cfg.Source, r.topic, r.info.SystemID, st.consistent-1); err != nil {
		return err
	}
	if err := st.setPhase(ctx, tx.Conn(), r.cfg.Source, phaseDone); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("init: record the handoff on the target: %w", err)
	}
	return nil
}

// tableHandoffs lists the units copied in a later snapshot than the slot's:
// their changes up to that snapshot are in their copy and must be skipped.
func tableHandoffs(consistent pglogrepl.LSN, units map[[2]string]pglogrepl.LSN) []catalog.TableHandoff {
	var out []catalog.TableHandoff
	for key, snapshot := range units {
		if snapshot != consistent {
			// The snapshot holds what committed before its slot's
			// consistent point, as for the handoff itself.
			out = append(out, catalog.TableHandoff{Schema: key[0], Table: key[1], After: snapshot - 1})
		}
	}
	slices.SortFunc(out, func(a, b catalog.TableHandoff) int {
		return cmp.Or(strings.Compare(a.Schema, b.Schema), strings.Compare(a.Table, b.Table))
	})
	return out
}
