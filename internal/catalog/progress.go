package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Progress is one row of pgtandem.apply_progress: how far a target has
// applied one source cluster's topic.
type Progress struct {
	Source       string
	Topic        string
	SourceSystem string
	// CommitLSN is the commit LSN of the last source transaction applied
	// (or the handoff of an init or clone); EndLSN its end, 0 after a
	// handoff.
	CommitLSN pglogrepl.LSN
	EndLSN    pglogrepl.LSN
	// MessageID is the broker's id of the message that ended the last
	// applied transaction, "" after a handoff.
	MessageID string
	// CommitTime is the source commit time of the last applied
	// transaction, AppliedAt when the target committed it.
	CommitTime time.Time
	AppliedAt  time.Time
	// BlockedReason is set while the apply is stopped at a message.
	BlockedReason string
	BlockedSince  time.Time
}

const progressColumns = `source_cluster, topic, coalesce(source_system, ''), commit_lsn, coalesce(end_lsn, '0/0'),
	coalesce(message_id, ''), coalesce(commit_time, 'epoch'), coalesce(applied_at, 'epoch'), coalesce(blocked_reason, ''), coalesce(blocked_since, 'epoch')`

func scanProgress(row pgx.Row) (Progress, error) {
	var p Progress
	err := row.Scan(&p.Source, &p.Topic, &p.SourceSystem, &p.CommitLSN, &p.EndLSN, &p.MessageID, &p.CommitTime, &p.AppliedAt, &p.BlockedReason, &p.BlockedSince)
	return p, err
}

// ReadProgress returns every apply_progress row of a target, none when
// nothing was ever applied to it.
func ReadProgress(ctx context.Context, conn *pgx.Conn) ([]Progress, error) {
	rows, err := conn.Query(ctx, `SELECT `+progressColumns+` FROM pgtandem.apply_progress ORDER BY source_cluster`)
	if missingRelation(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.apply_progress: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Progress, error) { return scanProgress(r) })
	if missingRelation(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.apply_progress: %w", err)
	}
	return out, nil
}

// StoredTopic returns the topic recorded for source on a target, "" when
// none is.
func StoredTopic(ctx context.Context, conn *pgx.Conn, source string) (string, error) {
	all, err := ReadProgress(ctx, conn)
	if err != nil {
		return "", err
	}
	for _, p := range all {
		if p.Source == source {
			return p.Topic, nil
		}
	}
	return "", nil
}

// EnsureProgress migrates the schema, creates source's row (at startAfter,
// a clone's start point, when there is none yet) and returns the row.
func EnsureProgress(ctx context.Context, conn *pgx.Conn, source, topic string, startAfter pglogrepl.LSN) (Progress, error) {
	if err := Migrate(ctx, conn); err != nil {
		return Progress{}, err
	}
	_, err := conn.Exec(ctx, `INSERT INTO pgtandem.apply_progress (source_cluster, topic, commit_lsn) VALUES ($1, $2, $3)
		ON CONFLICT (source_cluster) DO NOTHING`, source, topic, startAfter)
	if err != nil {
		return Progress{}, fmt.Errorf("record the start of %s in pgtandem.apply_progress: %w", source, err)
	}
	p, err := scanProgress(conn.QueryRow(ctx, `SELECT `+progressColumns+` FROM pgtandem.apply_progress WHERE source_cluster = $1`, source))
	if err != nil {
		return p, fmt.Errorf("read pgtandem.apply_progress of %s: %w", source, err)
	}
	return p, nil
}

// RecordHandoff records in the target's apply_progress that every
// transaction of source committed at or before after is already in the
// target, as `pgtandem init` does once its copy is complete: broker2pg then
// starts with the first transaction after it. Unlike a start point given to
// EnsureProgress it replaces a position stored before, because a new copy
// starts a new history. Call it in the transaction that commits the copy.
func RecordHandoff(ctx context.Context, conn *pgx.Conn, source, topic, sourceSystem string, after pglogrepl.LSN) error {
	if _, err := EnsureProgress(ctx, conn, source, topic, after); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, `UPDATE pgtandem.apply_progress SET topic = $2, source_system = $3, commit_lsn = $4, end_lsn = NULL,
		message_id = NULL, commit_time = NULL, applied_at = now(), blocked_reason = NULL, blocked_since = NULL WHERE source_cluster = $1`,
		source, topic, sourceSystem, after)
	if err != nil {
		return fmt.Errorf("record the handoff of %s at %s in pgtandem.apply_progress: %w", source, after, err)
	}
	return nil
}

// Statements of every apply transaction, in the order it sends them. The
// first locks the source's row, so that two appliers can never both apply a
// transaction (the second waits, then sees the first one's position); the
// origin's position and the new progress are recorded just before COMMIT.
const (
	// LockProgressSQL ($1 source) returns the stored commit_lsn.
	LockProgressSQL = `SELECT commit_lsn FROM pgtandem.apply_progress WHERE source_cluster = $1 FOR UPDATE`
	// OriginXactSQL ($1 end LSN, $2 commit time) advances the session's
	// replication origin with the transaction.
	OriginXactSQL = `SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2)`
	// RecordProgressSQL ($1 source, $2 topic, $3 source system, $4 commit
	// LSN, $5 end LSN, $6 message id, $7 commit time) stores the position.
	RecordProgressSQL = `UPDATE pgtandem.apply_progress SET topic = $2, source_system = $3, commit_lsn = $4::pg_lsn, end_lsn = $5::pg_lsn,
		message_id = $6, commit_time = $7, applied_at = now(), blocked_reason = NULL, blocked_since = NULL WHERE source_cluster = $1`
	// SetBlockedSQL ($1 source, $2 reason) records why the apply stopped.
	SetBlockedSQL = `UPDATE pgtandem.apply_progress SET blocked_reason = $2, blocked_since = coalesce(blocked_since, now()) WHERE source_cluster = $1`
)
