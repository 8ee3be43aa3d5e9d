package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// progressDDL creates the table that makes the apply exactly-once: its row
// for a source is updated in the same target transaction as the data, so
// the target itself says what it holds, whatever the broker's cursor says.
// The blocked columns are what `pgtandem status` shows.
const progressDDL = `
CREATE SCHEMA IF NOT EXISTS pgtandem;
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
)`

// Progress is one row of pgtandem.apply_progress: how far the target has
// applied one source cluster's topic.
type Progress struct {
	Source       string
	Topic        string
	SourceSystem string
	// CommitLSN is the commit LSN of the last source transaction applied
	// (or the start point of a clone); EndLSN its end.
	CommitLSN pglogrepl.LSN
	EndLSN    pglogrepl.LSN
	MessageID string
	// CommitTime is the source commit time of the last applied
	// transaction, AppliedAt when the target committed it.
	CommitTime time.Time
	AppliedAt  time.Time
	// BlockedReason is set while the apply is stopped at a message.
	BlockedReason string
	BlockedSince  time.Time
}

const progressColumns = `source_cluster, topic, coalesce(source_system, ''), commit_lsn::text, coalesce(end_lsn::text, '0/0'),
	coalesce(message_id, ''), coalesce(commit_time, 'epoch'), coalesce(applied_at, 'epoch'), coalesce(blocked_reason, ''), coalesce(blocked_since, 'epoch')`

func scanProgress(row pgx.Row) (Progress, error) {
	var p Progress
	var commit, end string
	if err := row.Scan(&p.Source, &p.Topic, &p.SourceSystem, &commit, &end, &p.MessageID, &p.CommitTime, &p.AppliedAt, &p.BlockedReason, &p.BlockedSince); err != nil {
		return p, err
	}
	var err error
	if p.CommitLSN, err = pglogrepl.ParseLSN(commit); err != nil {
		return p, err
	}
	p.EndLSN, err = pglogrepl.ParseLSN(end)
	return p, err
}

// ReadProgress returns every apply_progress row of a target, none when
// nothing was ever applied to it.
func ReadProgress(ctx context.Context, conn *pgx.Conn) ([]Progress, error) {
	rows, err := conn.Query(ctx, `SELECT `+progressColumns+` FROM pgtandem.apply_progress ORDER BY source_cluster`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.apply_progress: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Progress, error) { return scanProgress(r) })
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.apply_progress: %w", err)
	}
	return out, nil
}

// storedTopic returns the topic recorded for source, "" when none is.
func storedTopic(ctx context.Context, conn *pgx.Conn, source string) (string, error) {
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

// ensureProgress creates the table and the source's row (at startAfter, the
// clone's start point, when there is none yet) and returns the row.
func ensureProgress(ctx context.Context, conn *pgx.Conn, source, topic string, startAfter pglogrepl.LSN) (Progress, error) {
	if _, err := conn.Exec(ctx, progressDDL); err != nil {
		return Progress{}, fmt.Errorf("create pgtandem.apply_progress on the target: %w", err)
	}
	_, err := conn.Exec(ctx, `INSERT INTO pgtandem.apply_progress (source_cluster, topic, commit_lsn) VALUES ($1, $2, $3::pg_lsn)
		ON CONFLICT (source_cluster) DO NOTHING`, source, topic, startAfter.String())
	if err != nil {
		return Progress{}, fmt.Errorf("record the start of %s in pgtandem.apply_progress: %w", source, err)
	}
	p, err := scanProgress(conn.QueryRow(ctx, `SELECT `+progressColumns+` FROM pgtandem.apply_progress WHERE source_cluster = $1`, source))
	if err != nil {
		return p, fmt.Errorf("read pgtandem.apply_progress of %s: %w", source, err)
	}
	return p, nil
}

// Statements of every target transaction: the first locks the source's row,
// so that two appliers can never both apply a transaction (the second waits,
// then sees the first one's position); the last records the new position.
const (
	lockProgressSQL   = `SELECT commit_lsn::text FROM pgtandem.apply_progress WHERE source_cluster = $1 FOR UPDATE`
	recordProgressSQL = `UPDATE pgtandem.apply_progress SET topic = $2, source_system = $3, commit_lsn = $4::pg_lsn, end_lsn = $5::pg_lsn,
		message_id = $6, commit_time = $7, applied_at = now(), blocked_reason = NULL, blocked_since = NULL WHERE source_cluster = $1`
	originXactSQL = `SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2)`
	setBlockedSQL = `UPDATE pgtandem.apply_progress SET blocked_reason = $2, blocked_since = coalesce(blocked_since, now()) WHERE source_cluster = $1`
)
