package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// targetTxn is the open target transaction: it holds consecutive whole
// source transactions, commits them together with their position, and
// acknowledges their messages after its COMMIT.
type targetTxn struct {
	started    time.Time
	sourceTxns int // source transactions applied in it
	rows       int
	bytes      int
	// lastCommit is the COMMIT of the last whole source transaction in it,
	// received as message lastCommitID; nil while it holds none.
	lastCommit   *event.Event
	lastCommitID pulsar.MessageID
	// ackID is the last message its commit acknowledges: lastCommitID, or
	// the COMMIT of a source transaction skipped after it as already
	// applied.
	ackID pulsar.MessageID
}

// ackUpTo moves the acknowledgement to id unless it is there already: a
// redelivery can hand over an older message after newer ones.
func (tx *targetTxn) ackUpTo(id pulsar.MessageID) {
	if tx.ackID == nil || after(id, tx.ackID) {
		tx.ackID = id
	}
}

// after tells whether message a comes after message b in the topic.
func after(a, b pulsar.MessageID) bool {
	if a.LedgerID() != b.LedgerID() {
		return a.LedgerID() > b.LedgerID()
	}
	if a.EntryID() != b.EntryID() {
		return a.EntryID() > b.EntryID()
	}
	return a.BatchIdx() > b.BatchIdx()
}

// beginTargetTxn opens a target transaction and locks the source's
// progress row; a position moved by another applier since this one last
// looked moves this one's too.
func (a *applier) beginTargetTxn(ctx context.Context) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(catalog.LockProgressSQL, a.svc.cfg.Source)
	br := a.conn.SendBatch(context.WithoutCancel(ctx), b)
	a.targetTxn = &targetTxn{started: time.Now()}
	var stored pglogrepl.LSN
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&stored)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("begin target transaction and lock pgtandem.apply_progress: %w", err)
	}
	if event.LSN(stored) > a.applied {
		a.applied = event.LSN(stored)
	}
	return nil
}

// commitTargetTxn sends what is planned, records the position and the
// origin's progress, commits, and only then acknowledges.
func (a *applier) commitTargetTxn(ctx context.Context) error {
	tx := a.targetTxn
	if tx.lastCommit == nil {
		a.rollback()
		a.unacked = tx.ackID
		return a.ack()
	}
	if err := a.wait(); err != nil {
		return err
	}
	last := tx.lastCommit
	queries := a.plan.take()
	queries = append(queries,
		query{sql: catalog.OriginXactSQL, args: []any{last.EndLSN.String(), last.CommitTime}, expect: -1},
		query{sql: catalog.RecordProgressSQL, args: []any{a.svc.cfg.Source, a.topic, a.system, last.LSN.String(), last.EndLSN.String(), tx.lastCommitID.String(), last.CommitTime}, expect: 1},
		query{sql: "COMMIT", expect: -1},
	)
	if err := a.exec(ctx, queries); err != nil {
		return err
	}
	took := time.Since(tx.started)
	a.targetTxn = nil
	a.unacked = tx.ackID
	s := a.svc
	s.applied.Store(uint64(last.LSN))
	s.lag.Store(int64(time.Since(last.CommitTime)))
	if s.blocked.Swap(false) {
		a.log.Info("apply unblocked")
	}
	s.metrics.committed(tx.sourceTxns, tx.rows, took)
	return a.ack()
}

func (a *applier) ack() error {
	if a.unacked == nil {
		return nil
	}
	if err := a.consumer.AckIDCumulative(a.unacked); err != nil {
		// The target holds the data and its position: a lost ack only
		// means a redelivery that the position skips.
		a.log.Warn("acknowledge", "message", a.unacked, "err", err)
	}
	a.unacked = nil
	return nil
}

// flushAsync sends queries while the next messages are decoded and planned,
// so that the target's work overlaps with ours; one flush at a time keeps
// the statements in order.
func (a *applier) flushAsync(ctx context.Context, queries []query) error {
	if err := a.wait(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.exec(ctx, queries) }()
	a.inflight = done
	return nil
}

// wait returns the result of the flush in flight, if any; every other use
// of the connection comes after it.
func (a *applier) wait() error {
	if a.inflight == nil {
		return nil
	}
	err := <-a.inflight
	a.inflight = nil
	return err
}

// exec sends queries in one round trip (pipelined) and turns a failure into
// a *BlockedError naming the table and message when the data is at fault.
func (a *applier) exec(ctx context.Context, queries []query) error {
	if len(queries) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, q := range queries {
		b.Queue(q.sql, q.args...)
	}
	br := a.conn.SendBatch(context.WithoutCancel(ctx), b)
	var execErr error
	for _, q := range queries {
		tag, err := br.Exec()
		if err != nil {
			execErr = a.blame(q, err)
			break
		}
		if q.expect >= 0 && tag.RowsAffected() < int64(q.expect) {
			a.log.Warn("rows missing on the target", "table", q.table, "changed", tag.RowsAffected(), "want", q.expect, "message", idString(q.msgID), "lsn", q.lsn)
		}
	}
	if err := br.Close(); err != nil && execErr == nil {
		execErr = err
	}
	return execErr
}

// blockingClasses are the SQLSTATE classes that fail again on every retry
// until someone fixes the target: data exceptions (22), integrity
// violations (23), undefined objects or mismatched types (42).
var blockingClasses = []string{pgerrcode.DataException, pgerrcode.IntegrityConstraintViolation, pgerrcode.SyntaxErrorOrAccessRuleViolation}

// blame names what a failed statement was about.
func (a *applier) blame(q query, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || q.table == "" {
		return fmt.Errorf("apply: %w", err)
	}
	if !slices.ContainsFunc(blockingClasses, func(class string) bool { return sameClass(pgErr.Code, class) }) {
		return fmt.Errorf("apply to %s: %w", q.table, err)
	}
	reason := pgErr.Message
	if pgErr.Detail != "" {
		reason += " (" + pgErr.Detail + ")"
	}
	col := ""
	if pgErr.ColumnName != "" {
		col = event.QuoteIdent(pgErr.ColumnName)
	}
	return &BlockedError{Table: q.table, Column: col, MessageID: idString(q.msgID), LSN: q.lsn.String(), Reason: reason, Code: pgErr.Code}
}

// sameClass reports whether SQLSTATE code is of the class of classCode (a
// class's own code, like pgerrcode.DataException): the class, not the
// codes pgerrcode knows of, decides, so codes of newer servers count too.
func sameClass(code, classCode string) bool {
	return len(code) == 5 && code[:2] == classCode[:2]
}

// rollback abandons the open target transaction, if any; its messages are
// redelivered to the next session.
func (a *applier) rollback() {
	_ = a.wait()
	if a.targetTxn == nil {
		return
	}
	a.targetTxn = nil
	a.plan.take()
	if !a.conn.IsClosed() && a.conn.PgConn().TxStatus() != 'I' {
		_, _ = a.conn.Exec(context.Background(), "ROLLBACK")
	}
}

// recordBlocked writes the reason into apply_progress for `pgtandem
// status`, on the session's connection, so it carries the origin.
func recordBlocked(ctx context.Context, conn *pgx.Conn, source string, err error) {
	if conn == nil || conn.IsClosed() {
		return
	}
	reason := err.Error()
	if len(reason) > 2000 {
		reason = reason[:2000]
	}
	if conn.PgConn().TxStatus() != 'I' {
		_, _ = conn.Exec(ctx, "ROLLBACK")
	}
	_, _ = conn.Exec(ctx, catalog.SetBlockedSQL, source, strings.ToValidUTF8(reason, "?"))
}
