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
	// skipped are the changes it passes over as recorded in
	// pgtandem.apply_skips; its commit records that it did.
	skipped []skippedChange
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
	// Read once the lock is held: past the commit of another applier
	// that moved the position, which what this one skips relies on.
	b.Queue(walPositionsSQL)
	br := a.conn.SendBatch(context.WithoutCancel(ctx), b)
	a.targetTxn = &targetTxn{started: time.Now()}
	var stored pglogrepl.LSN
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&stored)
	}
	if err == nil {
		err = br.QueryRow().Scan(&a.insertLSN, &a.flushLSN)
	}
	if err == nil {
		a.ackFlushed(a.flushLSN)
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
		a.settlePending(time.Time{})
		return a.ack()
	}
	if err := a.wait(); err != nil {
		return err
	}
	last := tx.lastCommit
	queries := a.plan.take()
	for _, sk := range tx.skipped {
		queries = append(queries, query{sql: markSkippedSQL, args: []any{a.svc.cfg.Source, sk.lsn.String(), sk.change, idString(sk.msgID)}, expect: 1})
	}
	if a.blockedRow {
		queries = append(queries, query{sql: clearBlockedAtSQL, args: []any{a.svc.cfg.Source}, expect: -1})
	}
	// A statement that must change a number of rows is checked before
	// COMMIT is sent: in the same round trip, the target would commit
	// before the count is read.
	counted := slices.ContainsFunc(queries, func(q query) bool { return q.expect >= 0 })
	queries = append(queries,
		query{sql: catalog.OriginXactSQL, args: []any{last.EndLSN.String(), last.CommitTime}, expect: -1},
		query{sql: catalog.RecordProgressSQL, args: []any{a.svc.cfg.Source, a.topic, a.system, last.LSN.String(), last.EndLSN.String(), tx.lastCommitID.String(), last.CommitTime}, expect: 1},
	)
	commit := query{sql: "COMMIT", expect: -1}
	// Read right after the COMMIT, in the same round trip: the insert
	// position is past the commit record, which the acknowledgment of its
	// messages waits to see flushed.
	lsns := query{sql: walPositionsSQL, expect: -1, into: []any{&a.insertLSN, &a.flushLSN}}
	if counted {
		if err := a.exec(ctx, queries, nil); err != nil {
			return err
		}
		queries = nil
	}
	if err := a.exec(ctx, append(queries, commit, lsns), nil); err != nil {
		return err
	}
	if a.committedDurable {
		a.flushLSN = a.insertLSN
	}
	took := time.Since(tx.started)
	a.targetTxn = nil
	a.unacked = tx.ackID
	a.blockedRow = false
	s := a.svc
	s.applied.Store(uint64(last.LSN))
	a.settlePending(last.CommitTime)
	for _, sk := range tx.skipped {
		a.log.Warn("passed over a change as recorded in pgtandem.apply_skips", "table", sk.table, "lsn", sk.lsn.String(), "change", sk.change, "message", idString(sk.msgID))
	}
	if s.blocked.Swap(false) {
		s.blockedErr.Store(nil)
		a.log.Info("apply unblocked")
	}
	s.metrics.committed(tx.sourceTxns, tx.rows, took)
	return a.ack()
}

// settlePending updates Service.oldestPending after a target commit: no
// change is pending when no message is at hand; while more are, the next
// transaction committed at or after lastCommit, whose time stands in until
// it begins.
func (a *applier) settlePending(lastCommit time.Time) {
	a.pendingBegun = false
	switch {
	case !a.waiting():
		a.svc.oldestPending.Store(0)
	case !lastCommit.IsZero():
		a.svc.oldestPending.Store(lastCommit.UnixNano())
	}
}

// ack hands the messages up to a.unacked to the broker once the target
// has flushed its WAL up to where it was when they were handled: a commit
// of this session, or the commits before it that a skipped message relies
// on.
func (a *applier) ack() error {
	if a.unacked == nil {
		return nil
	}
	if n := len(a.flushWait); n > 0 && a.flushWait[n-1].lsn == a.insertLSN {
		// A run of skipped messages waits for one position: keep one
		// entry, the newest message (a redelivery can come out of order).
		if after(a.unacked, a.flushWait[n-1].id) {
			a.flushWait[n-1].id = a.unacked
		}
	} else {
		a.flushWait = append(a.flushWait, flushWait{lsn: a.insertLSN, id: a.unacked})
	}
	a.unacked = nil
	a.ackFlushed(a.flushLSN)
	return nil
}

// flushWait is an acknowledgment waiting for the target's WAL flush.
type flushWait struct {
	lsn pglogrepl.LSN // the target's WAL insert position once the message was handled
	id  pulsar.MessageID
}

// walPositionsSQL reads the target's WAL insert and flush positions.
const walPositionsSQL = `SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()`

// flushPoll is how long an idle applier with acknowledgments waiting lets
// pass before it has the target flush (pollFlush). A busy applier reads
// the flush position with every commit instead, and the target's WAL
// writer flushes asynchronous commits within three wal_writer_delay.
const flushPoll = 50 * time.Millisecond

// ackFlushed acknowledges, cumulatively, the newest waiting message whose
// position flushed covers.
func (a *applier) ackFlushed(flushed pglogrepl.LSN) {
	var id pulsar.MessageID
	n := 0
	for ; n < len(a.flushWait) && a.flushWait[n].lsn <= flushed; n++ {
		if id == nil || after(a.flushWait[n].id, id) {
			id = a.flushWait[n].id
		}
	}
	if n == 0 {
		return
	}
	a.flushWait = slices.Delete(a.flushWait, 0, n)
	if err := a.consumer.AckIDCumulative(id); err != nil {
		// The target holds the data and its position: a lost ack only
		// means a redelivery that the position skips.
		a.log.Warn("acknowledge", "message", id, "err", err)
	}
}

// awaitingFlush tells whether acknowledgments wait for a flush that only a
// poll will bring: no target transaction is open, whose commit would read
// the position anyway.
func (a *applier) awaitingFlush() bool {
	return len(a.flushWait) > 0 && a.targetTxn == nil && a.inflight == nil
}

// pollFlush has the target flush its WAL up to the last commit of the
// source's replication origin (pg_replication_origin_progress with flush
// = true), then acknowledges every waiting message: each relies on commits
// of that origin, this session's or an earlier applier's, all of them
// flushed now. The WAL writer alone would leave WAL after the last
// asynchronous commit unflushed while the target is idle, and a waiting
// insert position may lie there.
func (a *applier) pollFlush(ctx context.Context) error {
	// The progress itself is not needed: nil skips it.
	err := a.conn.QueryRow(ctx, `SELECT pg_replication_origin_progress($1, true)::text, pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()`,
		catalog.OriginName(a.svc.cfg.Source)).Scan(nil, &a.insertLSN, &a.flushLSN)
	if err != nil {
		return fmt.Errorf("flush the target's WAL up to the replication origin's last commit: %w", err)
	}
	if n := len(a.flushWait); n > 0 {
		a.ackFlushed(a.flushWait[n-1].lsn)
	}
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
	go func() { done <- a.exec(ctx, queries, nil) }()
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

// changeAt is the one change a strict round trip applies.
type changeAt struct {
	ev    *event.Event
	msgID pulsar.MessageID
}

// exec sends queries in one round trip (pipelined) and turns a failure, or
// a statement that changed another number of rows than the source did, into
// a *BlockedError. With at, the queries are those of that one change, which
// the error names; without, the error is one of the batch, which the
// service applies again in strict order to find the change at fault.
func (a *applier) exec(ctx context.Context, queries []query, at *changeAt) error {
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
		if q.into != nil {
			if err := br.QueryRow().Scan(q.into...); err != nil {
				execErr = blame(failedQuery(q, queries, err), err, at)
				break
			}
			continue
		}
		tag, err := br.Exec()
		if err != nil {
			execErr = blame(failedQuery(q, queries, err), err, at)
			break
		}
		if q.expect >= 0 && tag.RowsAffected() != int64(q.expect) {
			execErr = rowCountDiffers(q, tag.RowsAffected(), at)
			break
		}
	}
	if err := br.Close(); err != nil && execErr == nil {
		execErr = err
	}
	return execErr
}

// failedQuery returns the query err is about. A statement the target cannot
// even prepare fails the whole round trip before any statement runs, and
// pgx reports it on the first: its SQL tells which one it was.
func failedQuery(q query, queries []query, err error) query {
	var pre pgx.ErrPreprocessingBatch
	if !errors.As(err, &pre) {
		return q
	}
	for _, candidate := range queries {
		if candidate.sql == pre.SQL() {
			return candidate
		}
	}
	return q
}

// rowCountDiffers is the error of a statement that changed n rows where the
// source changed q.expect.
func rowCountDiffers(q query, n int64, at *changeAt) error {
	if q.table == "" {
		return fmt.Errorf("apply: pgtandem's own statement changed %d rows, expected %d: %s", n, q.expect, q.sql)
	}
	if at == nil {
		return &BlockedError{Table: q.table, MessageID: idString(q.msgID), LSN: q.lsn.String(), batch: true,
			Reason: fmt.Sprintf("a statement applying changes from this message on changed %d rows of the table, the source changed %d", n, q.expect)}
	}
	mr := &MissingRowError{Table: q.table, Kind: string(at.ev.Kind), Key: describeKey(at.ev), LSN: at.ev.LSN.String(), Change: at.ev.Seq, MessageID: idString(at.msgID), Matched: n,
		WholeRow: at.ev.ReplicaIdentity == "full" || !slices.ContainsFunc(at.ev.Columns, func(c event.Column) bool { return c.Key })}
	return &BlockedError{Table: mr.Table, MessageID: mr.MessageID, LSN: mr.LSN, Change: mr.Change, Reason: mr.Error(), Err: mr}
}

// blockingClasses are the SQLSTATE classes that fail again on every retry
// until someone fixes the target: data exceptions (22), integrity
// violations (23), undefined objects or mismatched types (42).
var blockingClasses = []string{pgerrcode.DataException, pgerrcode.IntegrityConstraintViolation, pgerrcode.SyntaxErrorOrAccessRuleViolation}

// blame names what a failed statement was about: the change at, or the
// statement's first message for a statement of a batch.
func blame(q query, err error, at *changeAt) error {
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
	if at == nil {
		return &BlockedError{Table: q.table, Column: col, MessageID: idString(q.msgID), LSN: q.lsn.String(), Reason: reason, Code: pgErr.Code, batch: true}
	}
	return &BlockedError{Table: q.table, Column: col, MessageID: idString(at.msgID), LSN: at.ev.LSN.String(), Change: at.ev.Seq, Reason: reason, Code: pgErr.Code}
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
// status`, with the change it is blocked at for `pgtandem apply skip` and
// the source commit time of the oldest transaction held back (pending, 0
// when unknown) for the lag, on the session's connection, so it carries
// the origin.
func recordBlocked(ctx context.Context, conn *pgx.Conn, source string, err error, pending time.Time) {
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
	var at blockedAtArgs
	var be *BlockedError
	if errors.As(err, &be) && be.Change > 0 {
		at.lsn, at.change, at.table = &be.LSN, &be.Change, &be.Table
	}
	if !pending.IsZero() {
		at.commitTime = &pending
	}
	_, _ = conn.Exec(ctx, setBlockedAtSQL, source, at.commitTime, at.lsn, at.change, at.table)
}
