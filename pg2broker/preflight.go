package pg2broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// minMajor is the oldest PostgreSQL whose pgoutput has what capture needs.
const minMajor = 11

// SourceInfo is what the checks learned about a source cluster.
type SourceInfo struct {
	Major    int
	SystemID string
	Database string
}

// source is what preflight learned about the source cluster and its slot.
type source struct {
	SourceInfo
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
	info, err := PrepareSource(ctx, conn, cfg.CreateSlot)
	src := source{SourceInfo: info}
	if err != nil {
		return src, err
	}
	src.confirmed, src.slotMissing, err = readSlot(ctx, conn, src, SlotName(cfg.Cluster), cfg.CreateSlot)
	return src, err
}

// PrepareSource checks what capture needs of a source (version, wal_level,
// encoding, a replica identity on every table) and makes sure the
// publication exists, creating it when create is set. `pgtandem init` calls
// it before it creates the slot.
func PrepareSource(ctx context.Context, conn *pgx.Conn, create bool) (SourceInfo, error) {
	var info SourceInfo
	var versionNum int
	var walLevel, encoding string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('wal_level'),
		current_setting('server_encoding'), (SELECT system_identifier::text FROM pg_control_system()), current_database()`).
		Scan(&versionNum, &walLevel, &encoding, &info.SystemID, &info.Database)
	if err != nil {
		return info, fmt.Errorf("preflight: read server settings: %w", err)
	}
	info.Major = versionNum / 10000
	if info.Major < minMajor {
		return info, &PreflightError{Check: "version", Detail: fmt.Sprintf("PostgreSQL %d is older than %d", info.Major, minMajor)}
	}
	if walLevel != "logical" {
		return info, &PreflightError{Check: "wal_level", Detail: fmt.Sprintf("wal_level is %q, logical decoding needs logical",
			walLevel), Fix: "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"}
	}
	if encoding != "UTF8" {
		return info, &PreflightError{Check: "encoding", Detail: fmt.Sprintf("server_encoding is %s; events carry text values as UTF-8 JSON, so only UTF8 databases are captured losslessly", encoding)}
	}
	if err := checkReplicaIdentity(ctx, conn); err != nil {
		return info, err
	}
	return info, ensurePublication(ctx, conn, info.Major, create)
}

// checkReplicaIdentity lists every table whose UPDATE/DELETE a FOR ALL
// TABLES publication could not replicate.
func checkReplicaIdentity(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
		  AND (c.relreplident = 'n'
		       OR (c.relreplident = 'd' AND NOT EXISTS (
		             SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
		ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("preflight: list tables without replica identity: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("preflight: list tables without replica identity: %w", err)
	}
	if len(tables) > 0 {
		return &ReplicaIdentityError{Tables: tables}
	}
	return nil
}

func ensurePublication(ctx context.Context, conn *pgx.Conn, major int, create bool) error {
	var exists, allTables bool
	err := conn.QueryRow(ctx, `SELECT true, puballtables FROM pg_publication WHERE pubname = $1`, PublicationName).Scan(&exists, &allTables)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("preflight: read publication %s: %w", PublicationName, err)
	}
	if exists {
		if !allTables {
			return &PreflightError{Check: "publication", Detail: fmt.Sprintf("publication %s is not FOR ALL TABLES, so new tables would be missed", PublicationName),
				Fix: fmt.Sprintf("DROP PUBLICATION %s; then pgtandem init (or pg2broker --create-slot)", PublicationName)}
		}
		return nil
	}
	if !create {
		return &PreflightError{Check: "publication", Detail: fmt.Sprintf("publication %s does not exist", PublicationName),
			Fix: "run pgtandem init, or start pg2broker with --create-slot"}
	}
	// Created before the slot: pgoutput reads publications with the slot's
	// historic snapshot and would not see a newer one.
	sql := "CREATE PUBLICATION " + PublicationName + " FOR ALL TABLES"
	if major >= 13 {
		sql += " WITH (publish_via_partition_root = true)"
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("preflight: create publication %s: %w", PublicationName, err)
	}
	return nil
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
