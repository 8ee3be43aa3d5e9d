package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
)

// Skips: an operator who decides that the target must do without one change
// the apply is blocked at records it in pgtandem.apply_skips (`pgtandem
// apply skip`, [RecordSkip]). The apply reads the table when a session
// starts, passes over exactly that change (the one at that commit LSN and
// position, of that table) and records when it did in the target
// transaction that applies the rest of the source transaction.

const (
	loadSkipsSQL = `SELECT commit_lsn, change, table_name FROM pgtandem.apply_skips
		WHERE source_cluster = $1 AND commit_lsn > $2 AND skipped_at IS NULL`
	// markSkippedSQL ($1 source, $2 commit LSN, $3 change, $4 message id).
	markSkippedSQL = `UPDATE pgtandem.apply_skips SET skipped_at = now(), message_id = $4
		WHERE source_cluster = $1 AND commit_lsn = $2::pg_lsn AND change = $3`
	// setBlockedAtSQL ($1 source, $2 commit time of the oldest transaction
	// held back, $3 commit LSN, $4 change and $5 table of the change the
	// apply is blocked at, NULL when it is not blocked at one change).
	setBlockedAtSQL = `UPDATE pgtandem.apply_progress SET blocked_commit_time = $2, blocked_lsn = $3::pg_lsn, blocked_change = $4, blocked_table = $5
		WHERE source_cluster = $1`
	clearBlockedAtSQL = `UPDATE pgtandem.apply_progress SET blocked_commit_time = NULL, blocked_lsn = NULL, blocked_change = NULL, blocked_table = NULL
		WHERE source_cluster = $1`
)

type blockedAtArgs struct {
	commitTime *time.Time
	lsn        *string
	change     *int
	table      *string
}

// skipKey is a change's position in the topic: its transaction's commit
// LSN and its seq.
type skipKey struct {
	lsn    event.LSN
	change int
}

// recordedSkip is a row of pgtandem.apply_skips not met yet.
type recordedSkip struct {
	table string
}

// skippedChange is a change a target transaction passed over.
type skippedChange struct {
	lsn    event.LSN
	change int
	table  string
	msgID  pulsar.MessageID
}

func loadSkips(ctx context.Context, conn *pgx.Conn, source string, after pglogrepl.LSN) (map[skipKey]recordedSkip, error) {
	rows, err := conn.Query(ctx, loadSkipsSQL, source, after)
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.apply_skips of %s: %w", source, err)
	}
	skips := map[skipKey]recordedSkip{}
	var lsn pglogrepl.LSN
	var change int
	var table string
	_, err = pgx.ForEachRow(rows, []any{&lsn, &change, &table}, func() error {
		skips[skipKey{lsn: event.LSN(lsn), change: change}] = recordedSkip{table: table}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.apply_skips of %s: %w", source, err)
	}
	return skips, nil
}

// skipRecorded passes over ev when an operator recorded it as one to skip.
// A recorded skip whose table is not the change's is not honoured: the
// position was meant for another change.
func (a *applier) skipRecorded(ev *event.Event, msgID pulsar.MessageID) bool {
	key := skipKey{lsn: ev.LSN, change: ev.Seq}
	sk, ok := a.skips[key]
	if !ok {
		return false
	}
	if ev.Table != "" && ev.QualifiedTable().String() != sk.table {
		a.log.Warn("pgtandem.apply_skips names another table than the change at its position; the change is applied", "lsn", ev.LSN.String(), "change", ev.Seq,
			"recorded_table", sk.table, "table", ev.QualifiedTable().String())
		return false
	}
	delete(a.skips, key)
	a.targetTxn.skipped = append(a.targetTxn.skipped, skippedChange{lsn: ev.LSN, change: ev.Seq, table: sk.table, msgID: msgID})
	return true
}

// BlockedAt is what a target records of a blocked apply of one source.
type BlockedAt struct {
	// Reason is the error that blocks, "" when the apply is not blocked.
	Reason string
	// CommitTime is the source commit time of the oldest transaction the
	// apply holds back, zero when unknown.
	CommitTime time.Time
	// LSN, Change and Table name the change the apply is blocked at, when
	// it is blocked at one change (Change > 0).
	LSN    event.LSN
	Change int
	Table  string
}

// ReadBlockedAt reads where the apply of source into the target of conn is
// blocked; a zero BlockedAt when it is not, or when the target has no
// progress of source.
func ReadBlockedAt(ctx context.Context, conn *pgx.Conn, source string) (BlockedAt, error) {
	return readBlockedAt(ctx, conn, source, "")
}

func readBlockedAt(ctx context.Context, conn *pgx.Conn, source, lock string) (BlockedAt, error) {
	// Through to_jsonb, so that a target whose pgtandem schema predates the
	// columns reads as "not known" instead of failing.
	var b BlockedAt
	var reason, lsn, table *string
	var commitTime *time.Time
	var change *int
	err := conn.QueryRow(ctx, `SELECT blocked_reason, (to_jsonb(p)->>'blocked_commit_time')::timestamptz, to_jsonb(p)->>'blocked_lsn',
		(to_jsonb(p)->>'blocked_change')::int, to_jsonb(p)->>'blocked_table'
		FROM pgtandem.apply_progress p WHERE source_cluster = $1 `+lock, source).Scan(&reason, &commitTime, &lsn, &change, &table)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, nil
	}
	if err != nil {
		return b, fmt.Errorf("read pgtandem.apply_progress of %s: %w", source, err)
	}
	if reason == nil {
		return b, nil
	}
	b.Reason = *reason
	if commitTime != nil {
		b.CommitTime = *commitTime
	}
	if lsn != nil && change != nil && table != nil {
		if b.LSN, err = event.ParseLSN(*lsn); err != nil {
			return b, fmt.Errorf("pgtandem.apply_progress of %s: blocked_lsn: %w", source, err)
		}
		b.Change, b.Table = *change, *table
	}
	return b, nil
}

// SkipRefusedError reports a skip that was not recorded because the apply
// is not blocked at that change.
type SkipRefusedError struct {
	Source string
	LSN    event.LSN
	Change int
	// Reason says where the apply stands instead.
	Reason string
}

func (e *SkipRefusedError) Error() string {
	return fmt.Sprintf("no skip recorded for change %d of source lsn %s of %s: %s", e.Change, e.LSN, e.Source, e.Reason)
}

// RecordSkip records in the target of conn that the apply of source passes
// over change (its seq) of the source transaction committed at lsn. It does
// so only while the apply is blocked at exactly that change, which it
// returns; otherwise it returns a *SkipRefusedError and records nothing.
// The apply passes over the change at its next attempt and records when in
// pgtandem.apply_skips.skipped_at; nothing else is skipped.
func RecordSkip(ctx context.Context, conn *pgx.Conn, source string, lsn event.LSN, change int) (BlockedAt, error) {
	var at BlockedAt
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		// FOR UPDATE waits for a target transaction of the apply in
		// progress, so the position read is the one it left.
		if at, err = readBlockedAt(ctx, tx.Conn(), source, "FOR UPDATE"); err != nil {
			return err
		}
		refuse := func(reason string) error {
			return &SkipRefusedError{Source: source, LSN: lsn, Change: change, Reason: reason}
		}
		switch {
		case at.Reason == "":
			return refuse("the apply is not blocked (see pgtandem status); a change is skipped only where the apply stands blocked")
		case at.Change == 0:
			return refuse("the apply is blocked, but not at one change, which a skip cannot pass over: " + at.Reason)
		case at.LSN != lsn || at.Change != change:
			return refuse(fmt.Sprintf("the apply is blocked at change %d of source lsn %s on %s", at.Change, at.LSN, at.Table))
		}
		_, err = tx.Exec(ctx, `INSERT INTO pgtandem.apply_skips (source_cluster, commit_lsn, change, table_name, blocked_reason)
			VALUES ($1, $2::pg_lsn, $3, $4, $5) ON CONFLICT (source_cluster, commit_lsn, change) DO NOTHING`, source, lsn.String(), change, at.Table, at.Reason)
		if err != nil {
			return fmt.Errorf("record the skip in pgtandem.apply_skips: %w", err)
		}
		return nil
	})
	return at, err
}
