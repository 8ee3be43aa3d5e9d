package bootstrap

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// SlotExistsError reports a slot that no init recorded on the target: one of
// an older pgtandem, of clone mode, or in use by pg2broker. init never
// replaces one.
type SlotExistsError struct {
	Slot string
}

func (e *SlotExistsError) Error() string {
	return fmt.Sprintf("init: slot %s already exists on the source (an earlier init, or pg2broker running): if it is stale, drop it with SELECT pg_drop_replication_slot('%s') and run init again", e.Slot, e.Slot)
}

// createSlot creates publication and slot; the slot's exported snapshot is
// what a first run copies in. Its consistent point is recorded at once, and
// the slot dropped again when that fails: a slot init does not know of would
// hold WAL for nothing.
func (r *run) createSlot(ctx context.Context, st *initState, tables []sourceTable) (*snapshot, error) {
	if !r.cfg.AllowNonEmpty {
		if err := checkEmpty(ctx, r.dst, tables); err != nil {
			return nil, err
		}
	}
	if _, err := catalog.PrepareSource(ctx, r.src, true); err != nil {
		return nil, err
	}
	snap, err := exportSnapshot(ctx, r.cfg.SourceDSN, r.slot, false)
	if err != nil {
		return nil, err
	}
	if err := st.recordSlot(ctx, r.dst, r.cfg.Source, snap.lsn); err != nil {
		snap.close()
		if _, derr := r.src.Exec(context.WithoutCancel(ctx), `SELECT pg_drop_replication_slot($1)`, r.slot); derr != nil {
			return nil, fmt.Errorf("%w; the slot %s could not be dropped again (%v) and holds WAL: drop it with SELECT pg_drop_replication_slot('%s') on %s",
				err, r.slot, derr, r.slot, r.cfg.Source)
		}
		return nil, fmt.Errorf("%w (the slot %s was dropped again)", err, r.slot)
	}
	r.log.Info("created slot with an exported snapshot", "slot", r.slot, "consistent_point", snap.lsn.String(), "snapshot", snap.name)
	return snap, nil
}

// snapshot is a snapshot exported by the creation of a slot: the
// transactions committed before the slot's consistent point are in it, later
// ones are not. It lives while the replication connection that created it
// stays open and idle.
type snapshot struct {
	name string
	lsn  pglogrepl.LSN
	conn *pgconn.PgConn
}

// exportSnapshot creates slot with an exported snapshot. A resumed run
// creates a temporary one, gone with the connection: the permanent slot
// still holds every change since the first snapshot, and the tables copied
// in this one get their own handoff at its consistent point.
func exportSnapshot(ctx context.Context, dsn, slot string, temporary bool) (*snapshot, error) {
	conn, err := replicationConn(ctx, dsn)
	if err != nil {
		return nil, err
	}
	created, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{Temporary: temporary, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("init: create slot %s: %w", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("init: consistent point of slot %s: %w", slot, err)
	}
	return &snapshot{name: created.SnapshotName, lsn: lsn, conn: conn}, nil
}

func (s *snapshot) close() { s.conn.Close(context.Background()) }

func replicationConn(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	conn, err := catalog.ConnectReplication(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("init: replication connection to source: %w", err)
	}
	return conn, nil
}

func slotExists(ctx context.Context, conn *pgx.Conn, slot string) (bool, error) {
	var exists bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists)
	return exists, err
}
