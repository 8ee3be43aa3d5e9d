package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// migrations[i] brings the pgtandem schema from version i to i+1. Append
// only: a migration that has run somewhere is never edited, a change is a
// new migration. Statements are idempotent (IF NOT EXISTS) so that clusters
// written by a pgtandem that created these tables before the schema had a
// version are brought to version 1 without error.
var migrations = []string{
	// 1: the tables of capture, apply and init.
	`
-- apply_progress makes the apply exactly-once: a source's row is updated in
-- the same target transaction as the data, so the target itself says what it
-- holds, whatever the broker's cursor says. The blocked columns are what
-- pgtandem status shows.
CREATE TABLE IF NOT EXISTS pgtandem.apply_progress (
	source_cluster text PRIMARY KEY,
	topic          text NOT NULL,
	source_system  text,
	commit_lsn     pg_lsn NOT NULL,
	end_lsn        pg_lsn,
	message_id     text,
	commit_time    timestamptz,
	applied_at     timestamptz,
	blocked_reason text,
	blocked_since  timestamptz
);
-- table_handoff: per-table handoffs of a resumed init (see RecordTableHandoffs).
CREATE TABLE IF NOT EXISTS pgtandem.table_handoff (
	source_cluster text NOT NULL,
	schema_name    text NOT NULL,
	table_name     text NOT NULL,
	after_lsn      pg_lsn NOT NULL,
	PRIMARY KEY (source_cluster, schema_name, table_name)
);
-- init_state and init_tables: how far an init got, so that an interrupted
-- one can be resumed or at least explained. init_tables has one row per table
-- (per key range of a split table) whose copy is committed, written in the
-- same target transaction as the data.
CREATE TABLE IF NOT EXISTS pgtandem.init_state (
	source_cluster text PRIMARY KEY,
	source_system  text NOT NULL,
	slot_name      text NOT NULL,
	phase          text NOT NULL,
	schema_mode    text NOT NULL DEFAULT 'restore',
	consistent_lsn pg_lsn,
	started_at     timestamptz NOT NULL DEFAULT now(),
	updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgtandem.init_tables (
	source_cluster text NOT NULL,
	schema_name    text NOT NULL,
	table_name     text NOT NULL,
	part           int NOT NULL,
	parts          int NOT NULL,
	snapshot_lsn   pg_lsn NOT NULL,
	rows           bigint NOT NULL,
	bytes          bigint NOT NULL,
	seconds        double precision NOT NULL,
	copied_at      timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source_cluster, schema_name, table_name, part)
);`,
	// 2: where a blocked apply stands, and the changes an operator skipped.
	`
-- Set with blocked_reason: the source commit time of the oldest transaction
-- the blocked apply holds back (what pgtandem status shows as its lag), and
-- the change it is blocked at when it is one change (what pgtandem apply
-- skip checks).
ALTER TABLE pgtandem.apply_progress
	ADD COLUMN IF NOT EXISTS blocked_commit_time timestamptz,
	ADD COLUMN IF NOT EXISTS blocked_lsn         pg_lsn,
	ADD COLUMN IF NOT EXISTS blocked_change      int,
	ADD COLUMN IF NOT EXISTS blocked_table       text;
-- apply_skips: changes an operator told the apply to pass over (pgtandem
-- apply skip), each the change-th of the source transaction committed at
-- commit_lsn; the apply sets skipped_at and message_id in the target
-- transaction that passes over it.
CREATE TABLE IF NOT EXISTS pgtandem.apply_skips (
	source_cluster text NOT NULL,
	commit_lsn     pg_lsn NOT NULL,
	change         int NOT NULL,
	table_name     text NOT NULL,
	blocked_reason text NOT NULL,
	requested_by   text NOT NULL DEFAULT current_user,
	requested_at   timestamptz NOT NULL DEFAULT now(),
	skipped_at     timestamptz,
	message_id     text,
	PRIMARY KEY (source_cluster, commit_lsn, change)
);`,
	// 3: the switch's journal and marker.
	`
-- switches: one row per pgtandem switch, on both clusters (the switch writes
-- each directly; capture leaves it out). state is running until the switch
-- ends done, undone (its deadline expired, clients back on the source) or
-- aborted (pgtandem switch --abort); a running row is what refuses a second
-- switch and what --resume and --abort continue.
CREATE TABLE IF NOT EXISTS pgtandem.switches (
	switch_id          text PRIMARY KEY,
	from_cluster       text NOT NULL,
	to_cluster         text NOT NULL,
	state              text NOT NULL,
	started_at         timestamptz NOT NULL DEFAULT now(),
	ended_at           timestamptz,
	to_was_fenced      bool NOT NULL DEFAULT false,
	marker_lsn         pg_lsn,
	marker_message_id  text,
	reverse_message_id text,
	report             jsonb
);
-- switch_steps: the start and end of every step of a switch.
CREATE TABLE IF NOT EXISTS pgtandem.switch_steps (
	switch_id  text NOT NULL,
	step       text NOT NULL,
	started_at timestamptz NOT NULL,
	ended_at   timestamptz,
	detail     text,
	PRIMARY KEY (switch_id, step)
);
-- switch_marker travels like any table: a row written on one cluster and
-- found on the other proves the apply holds everything committed before it.
CREATE TABLE IF NOT EXISTS pgtandem.switch_marker (
	marker_id  text PRIMARY KEY,
	written_on text NOT NULL,
	written_at timestamptz NOT NULL DEFAULT now()
);`,
	// 4: the cursor rows that mark a switch's cut in both topics.
	`
-- cursor travels like any table, so each row is in-band in the topic of the
-- cluster it is written on and, once the other direction applied it, on
-- both clusters. At each switch two rows (see package cursor): 'cut',
-- written on the target inside the write pause before it takes writes, so
-- its frame is the cut in the target's topic; 'hop', written on the source
-- once the cut frame's message id is known, so that a consumer of the
-- source's topic learns where to continue. from_message_id is the message
-- of the switch's marker in the source's topic (the last frame there before
-- the cut); to_message_id the cut frame in the target's; to_after_message_id
-- a message of the target's topic the cut frame comes after, where a search
-- for it may start ('' = the earliest).
CREATE TABLE IF NOT EXISTS pgtandem.cursor (
	switch_id           text NOT NULL,
	kind                text NOT NULL CHECK (kind IN ('cut', 'hop')),
	from_cluster        text NOT NULL,
	to_cluster          text NOT NULL,
	from_topic          text NOT NULL,
	from_message_id     text NOT NULL,
	from_commit_lsn     pg_lsn NOT NULL,
	from_commit_time    timestamptz NOT NULL,
	to_topic            text NOT NULL,
	to_after_message_id text NOT NULL,
	to_message_id       text,
	to_commit_lsn       pg_lsn,
	to_commit_time      timestamptz,
	written_at          timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (switch_id, kind)
);`,
}

// SchemaVersion is the version of the pgtandem schema this build writes.
var SchemaVersion = len(migrations)

// bookkeeping are the tables that describe one cluster's own state (what it
// applied, how its copy went, which schema it has): copied to another
// cluster they would overwrite that cluster's state, so capture never
// publishes them. Other tables of the schema (markers, cursors) travel like
// any table.
var bookkeeping = map[string]bool{
	"schema_version": true, "apply_progress": true, "init_state": true, "init_tables": true, "table_handoff": true,
	"apply_skips": true, "switches": true, "switch_steps": true,
}

// IsBookkeeping tells whether schema.table is one of pgtandem's own state
// tables, which capture leaves out of the topic.
func IsBookkeeping(schema, table string) bool { return schema == Schema && bookkeeping[table] }

// IsInBand tells whether schema.table is one of pgtandem's tables that
// travel in the topic (switch markers, cursor rows): a switch or a cursor
// waits at the other end for each row of them, so capture publishes it at
// once rather than after the batching delay.
func IsInBand(schema, table string) bool { return schema == Schema && !bookkeeping[table] }

// SchemaTooNewError reports a cluster whose pgtandem schema was written by a
// newer pgtandem: this one would not know its tables.
type SchemaTooNewError struct {
	Found, Known int
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("the pgtandem schema of this cluster is at version %d, this pgtandem knows up to %d: use the newer pgtandem that wrote it", e.Found, e.Known)
}

// Migrate creates the pgtandem schema or brings it to SchemaVersion. It costs
// one query when the schema is current. The migrations run in one implicit
// transaction under an advisory lock, so two processes migrating at once
// wait for each other; called inside a transaction, they commit with it.
// It returns a *SchemaTooNewError for a schema of a newer pgtandem.
func Migrate(ctx context.Context, conn *pgx.Conn) error {
	found, err := readVersion(ctx, conn)
	if err != nil {
		return err
	}
	if found == SchemaVersion {
		return nil
	}
	if found > SchemaVersion {
		return &SchemaTooNewError{Found: found, Known: SchemaVersion}
	}
	var b strings.Builder
	b.WriteString(`SELECT pg_advisory_xact_lock(hashtext('pgtandem schema'));
CREATE SCHEMA IF NOT EXISTS pgtandem;
CREATE TABLE IF NOT EXISTS pgtandem.schema_version (
	one        bool PRIMARY KEY DEFAULT true CHECK (one),
	version    int NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
`)
	for _, m := range migrations[found:] {
		b.WriteString(m)
		b.WriteString("\n")
	}
	// GREATEST: a concurrent Migrate that won the lock may have gone further.
	fmt.Fprintf(&b, `INSERT INTO pgtandem.schema_version (version) VALUES (%d)
ON CONFLICT (one) DO UPDATE SET version = GREATEST(pgtandem.schema_version.version, EXCLUDED.version), updated_at = now();`, SchemaVersion)
	if _, err := conn.Exec(ctx, b.String()); err != nil {
		return fmt.Errorf("create or migrate the pgtandem schema from version %d to %d: %w", found, SchemaVersion, err)
	}
	return nil
}

// readVersion returns the schema version recorded in the cluster, 0 when it
// has no pgtandem schema or one written before versions were recorded. It
// looks before it reads: a failed read would abort a caller's transaction.
func readVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('pgtandem.schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read the pgtandem schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var version int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM pgtandem.schema_version`).Scan(&version); err != nil {
		return 0, fmt.Errorf("read the pgtandem schema version: %w", err)
	}
	return version, nil
}

// missingRelation tells whether err is PostgreSQL's "relation does not
// exist" or "schema does not exist": a cluster pgtandem never wrote to.
func missingRelation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName)
}
