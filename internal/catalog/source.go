package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

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

// PreflightError is a condition of the source that makes capture impossible
// or unsafe; Fix says what to run.
type PreflightError struct {
	Check  string
	Detail string
	Fix    string
}

func (e *PreflightError) Error() string {
	msg := "preflight " + e.Check + ": " + e.Detail
	if e.Fix != "" {
		msg += "\n  fix: " + e.Fix
	}
	return msg
}

// ReplicaIdentityError lists the tables whose UPDATE and DELETE cannot be
// captured: no primary key and REPLICA IDENTITY DEFAULT, or NOTHING. A FOR
// ALL TABLES publication would make those statements fail on the primary, so
// it is never created while this error stands.
type ReplicaIdentityError struct {
	Tables []string // quoted schema.table
}

func (e *ReplicaIdentityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "preflight replica identity: %d table(s) have no primary key and REPLICA IDENTITY DEFAULT or NOTHING; their UPDATE and DELETE cannot be replicated:", len(e.Tables))
	for _, t := range e.Tables {
		fmt.Fprintf(&b, "\n  ALTER TABLE %s REPLICA IDENTITY FULL;", t)
	}
	b.WriteString("\n  (or add a primary key, or REPLICA IDENTITY USING INDEX on a unique index of NOT NULL columns)")
	return b.String()
}
