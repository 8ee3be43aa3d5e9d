package pg2broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// source is what preflight learned about the source cluster and its slot.
type source struct {
	catalog.SourceInfo
	// confirmed is the slot's confirmed_flush_lsn: where streaming resumes.
	confirmed pglogrepl.LSN
	// slotMissing says the slot does not exist yet and may be created
	// (Config.CreateSlot), once the topic shows it never had one.
	slotMissing bool
}

// preflight checks everything capture depends on, in the order that makes
// the first failure the most useful, and creates the publication when
// cfg.CreateSlot asks for it.
func preflight(ctx context.Context, conn *pgx.Conn, cfg Config) (source, error) {
	info, err := catalog.PrepareSource(ctx, conn, cfg.CreateSlot)
	src := source{SourceInfo: info}
	if err != nil {
		return src, err
	}
	src.confirmed, src.slotMissing, err = readSlot(ctx, conn, src, catalog.SlotName(cfg.Cluster), cfg.CreateSlot)
	return src, err
}

// readSlot checks the slot and returns its confirmed position; a missing
// slot is an error unless it may be created.
func readSlot(ctx context.Context, conn *pgx.Conn, src source, slot string, mayCreate bool) (pglogrepl.LSN, bool, error) {
	status := "NULL::text"
	if src.Major >= 13 {
		status = "wal_status"
	}
	var plugin, database, walStatus, confirmed *string
	err := conn.QueryRow(ctx, `SELECT plugin, database, `+status+`, confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &database, &walStatus, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		if !mayCreate {
			return 0, false, &SlotError{Slot: slot, Reason: "does not exist: run pgtandem init, or start pg2broker with --create-slot (a slot is never recreated silently: changes made while it was missing would be lost)"}
		}
		return 0, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("preflight: read slot %s: %w", slot, err)
	}
	switch {
	case plugin == nil || *plugin != "pgoutput":
		return 0, false, &SlotError{Slot: slot, Reason: fmt.Sprintf("is not a pgoutput logical slot (plugin %s)", deref(plugin))}
	case database == nil || *database != src.Database:
		return 0, false, &SlotError{Slot: slot, Reason: fmt.Sprintf("belongs to database %s, not %s", deref(database), src.Database)}
	case walStatus != nil && *walStatus == "lost":
		return 0, false, &SlotError{Slot: slot, Reason: "is invalidated (wal_status lost): PostgreSQL removed WAL it still needed; the target must be synchronised again with pgtandem init"}
	case confirmed == nil:
		return 0, false, &SlotError{Slot: slot, Reason: "has no confirmed position"}
	}
	lsn, err := pglogrepl.ParseLSN(*confirmed)
	return lsn, false, err
}

// createSlot creates the slot, which starts at the present.
func createSlot(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, error) {
	var lsn string
	if err := conn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("create slot %s: %w", slot, err)
	}
	return pglogrepl.ParseLSN(lsn)
}

func deref(s *string) string {
	if s == nil {
		return "none"
	}
	return *s
}

// typeNamer names column types with format_type, as the event format
// documents.
func typeNamer(conn *pgx.Conn) TypeNamer {
	return func(ctx context.Context, oid uint32, typmod int32) (string, error) {
		var name string
		err := conn.QueryRow(ctx, `SELECT format_type($1::oid, $2::int)`, oid, typmod).Scan(&name)
		return name, err
	}
}
