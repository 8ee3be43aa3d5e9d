package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// errInactive ends a session whose consumer lost the active role: its open
// target transaction is rolled back and the new active consumer gets the
// unacknowledged messages.
var errInactive = errors.New("another replica became the active consumer")

// FramingError reports messages that do not form whole transactions in
// order (a change without its BEGIN, a gap in seq): the session restarts from
// the last acknowledged message.
type FramingError struct {
	MessageID string
	Reason    string
}

func (e *FramingError) Error() string {
	return "topic framing at message " + e.MessageID + ": " + e.Reason
}

// applier is the loop of one session. Source transactions are applied in
// groups: one target transaction takes consecutive source transactions until
// a bound of Config is reached or no message is waiting, and ends with the
// update of apply_progress and the origin's position; only after its COMMIT
// are the messages acknowledged.
type applier struct {
	svc      *Service
	log      *slog.Logger
	conn     *pgx.Conn
	topic    string
	consumer pulsar.Consumer
	schema   *schemaCache
	plan     *plan

	ready   bool      // origin set up, progress read
	applied event.LSN // commit LSN of the last source transaction applied or in the open group
	system  string    // source system id the target's progress belongs to

	cur   *sourceTxn
	group *group
	// decoded carries messages from the decoding goroutine.
	decoded chan decoded
	// inflight, when not nil, delivers the result of the flush running on
	// its own goroutine; nothing else uses the connection until it has.
	inflight chan error
	// unacked is the last message handled outside a group (a skipped
	// transaction), acknowledged with the next group or right away.
	unacked pulsar.MessageID
}

// sourceTxn is the source transaction being received.
type sourceTxn struct {
	lsn  event.LSN
	next int // seq expected next
	skip bool
}

// group is the open target transaction.
type group struct {
	started time.Time
	txns    int
	rows    int
	bytes   int
	last    *event.Event // COMMIT of the last whole source transaction
	lastID  pulsar.MessageID
	// ackID is the last message the group's commit acknowledges: lastID,
	// or the COMMIT of a transaction skipped after it as already applied.
	ackID pulsar.MessageID
}

// ackUpTo moves the group's acknowledgement to id unless it is there
// already: a redelivery can hand over an older message after newer ones.
func (g *group) ackUpTo(id pulsar.MessageID) {
	if g.ackID == nil || after(id, g.ackID) {
		g.ackID = id
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

func (a *applier) run(ctx context.Context, active <-chan activeChange) error {
	defer a.rollback()
	quit := make(chan struct{})
	decoderDone := make(chan struct{})
	go a.decode(quit, decoderDone)
	defer func() {
		close(quit)
		<-decoderDone
	}()
	wasActive := false
	for {
		select {
		case <-ctx.Done():
			return a.stop()
		case change := <-active:
			if change {
				wasActive = true
				a.svc.setState("applying")
			} else if wasActive {
				return errInactive
			}
		case d, ok := <-a.decoded:
			if !ok {
				return errors.New("consumer closed")
			}
			wasActive = true
			if err := a.handle(ctx, d); err != nil {
				return err
			}
		}
	}
}

// decoded is a message with its event, or why it is not one.
type decoded struct {
	msg pulsar.Message
	ev  *event.Event
	err error
}

// decode turns messages into events on a goroutine of its own, so that
// decoding overlaps with planning and the target's work; it ends when quit
// closes.
func (a *applier) decode(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-quit:
			return
		case cm, ok := <-a.consumer.Chan():
			if !ok {
				close(a.decoded)
				return
			}
			ev, err := event.Unmarshal(cm.Message.Payload())
			select {
			case a.decoded <- decoded{msg: cm.Message, ev: ev, err: err}:
			case <-quit:
				return
			}
		}
	}
}

// handle applies one message.
func (a *applier) handle(ctx context.Context, d decoded) error {
	msg, ev, err := d.msg, d.ev, d.err
	if !a.ready {
		if err := a.setup(ctx, msg); err != nil {
			return err
		}
	}
	if err != nil {
		return &BlockedError{MessageID: msg.ID().String(), LSN: msg.Properties()[event.PropLSN], Reason: err.Error() + "; the message cannot be applied: remove it from the topic only if you know what it held"}
	}
	if sys := msg.Properties()[event.PropSystem]; sys != "" && a.system != "" && sys != a.system {
		return &IdentityError{Source: a.svc.cfg.Source, StoredSystem: a.system, EventSystem: sys}
	} else if a.system == "" {
		a.system = sys
	}
	switch ev.Kind {
	case event.KindBegin:
		return a.begin(ctx, ev, msg)
	case event.KindCommit:
		return a.commit(ctx, ev, msg)
	default:
		return a.change(ctx, ev, msg)
	}
}

func (a *applier) begin(ctx context.Context, ev *event.Event, msg pulsar.Message) error {
	if a.cur != nil {
		if ev.LSN == a.cur.lsn {
			return nil // redelivered BEGIN of the transaction being received
		}
		return &FramingError{MessageID: msg.ID().String(), Reason: fmt.Sprintf("BEGIN of %s while %s is open", ev.LSN, a.cur.lsn)}
	}
	if ev.LSN <= a.applied {
		a.cur = &sourceTxn{lsn: ev.LSN, skip: true}
		return nil
	}
	if a.group == nil {
		if err := a.beginGroup(ctx); err != nil {
			return err
		}
		if ev.LSN <= a.applied {
			a.cur = &sourceTxn{lsn: ev.LSN, skip: true}
			return nil
		}
	}
	a.cur = &sourceTxn{lsn: ev.LSN, next: 1}
	a.svc.lastBegun.Store(uint64(ev.LSN))
	a.plan.strict = uint64(ev.LSN) <= a.svc.strictUntil.Load()
	return nil
}

func (a *applier) change(ctx context.Context, ev *event.Event, msg pulsar.Message) error {
	switch {
	case a.cur == nil && ev.LSN <= a.applied, a.cur != nil && ev.LSN < a.cur.lsn:
		return nil // redelivered message of a transaction already applied
	case a.cur == nil || ev.LSN != a.cur.lsn:
		return &FramingError{MessageID: msg.ID().String(), Reason: fmt.Sprintf("%s of %s seq %d outside its transaction", ev.Kind, ev.LSN, ev.Seq)}
	case a.cur.skip || ev.Seq < a.cur.next:
		return nil
	case ev.Seq > a.cur.next:
		return &FramingError{MessageID: msg.ID().String(), Reason: fmt.Sprintf("seq %d of %s follows seq %d", ev.Seq, ev.LSN, a.cur.next-1)}
	}
	a.cur.next++
	size := len(msg.Payload())
	a.group.rows++
	a.group.bytes += size
	if err := a.plan.add(ctx, ev, msg.ID(), size); err != nil {
		return err
	}
	if a.plan.rows >= a.svc.cfg.FlushRows || a.plan.bytes >= a.svc.cfg.GroupBytes/4 {
		return a.flushAsync(ctx, a.plan.take())
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

func (a *applier) commit(ctx context.Context, ev *event.Event, msg pulsar.Message) error {
	switch {
	case a.cur != nil && ev.LSN < a.cur.lsn:
		return nil
	case a.cur == nil && ev.LSN <= a.applied:
		// The end of a transaction already applied, redelivered without
		// its beginning: acknowledged, or it would stay in the backlog.
		if a.group == nil {
			a.unacked = msg.ID()
			return a.ack()
		}
		a.group.ackUpTo(msg.ID())
		return a.endOfTransaction(ctx)
	case a.cur == nil || ev.LSN != a.cur.lsn:
		return &FramingError{MessageID: msg.ID().String(), Reason: fmt.Sprintf("COMMIT of %s outside its transaction", ev.LSN)}
	case a.cur.skip:
		a.cur = nil
		if a.group == nil {
			a.unacked = msg.ID()
			return a.ack()
		}
		a.group.ackUpTo(msg.ID())
		return a.endOfTransaction(ctx)
	case ev.Seq != a.cur.next || ev.Rows != a.cur.next-1:
		return &FramingError{MessageID: msg.ID().String(), Reason: fmt.Sprintf("COMMIT of %s seq %d rows %d after seq %d", ev.LSN, ev.Seq, ev.Rows, a.cur.next-1)}
	}
	a.cur = nil
	a.applied = ev.LSN
	g := a.group
	g.txns++
	g.last, g.lastID = ev, msg.ID()
	g.ackUpTo(msg.ID())
	return a.endOfTransaction(ctx)
}

// endOfTransaction commits the group when nothing more is waiting or a
// bound is reached; a group must never stay open once the topic is read,
// whether its last transaction was applied or skipped.
func (a *applier) endOfTransaction(ctx context.Context) error {
	g, cfg := a.group, a.svc.cfg
	if len(a.decoded) == 0 && len(a.consumer.Chan()) == 0 || g.rows >= cfg.GroupRows || g.bytes >= cfg.GroupBytes || time.Since(g.started) >= cfg.GroupDelay {
		return a.commitGroup(ctx)
	}
	return nil
}

// setup prepares the target on the first message this consumer receives,
// that is once it is the active one: a standby must not hold the origin.
func (a *applier) setup(ctx context.Context, msg pulsar.Message) error {
	origin := catalog.OriginName(a.svc.cfg.Source)
	_, err := a.conn.Exec(ctx, `SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, origin)
	if err != nil {
		return fmt.Errorf("create replication origin %s on the target: %w", origin, err)
	}
	// Every write of this session, apply_progress included, carries the
	// origin, so the target's own capture never publishes it.
	if _, err := a.conn.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, origin); err != nil {
		return fmt.Errorf("use replication origin %s (another broker2pg may still hold it): %w", origin, err)
	}
	p, err := catalog.EnsureProgress(ctx, a.conn, a.svc.cfg.Source, a.topic, a.svc.cfg.StartAfterLSN)
	if err != nil {
		return err
	}
	if sys := msg.Properties()[event.PropSystem]; p.SourceSystem != "" && sys != "" && sys != p.SourceSystem {
		return &IdentityError{Source: a.svc.cfg.Source, StoredSystem: p.SourceSystem, EventSystem: sys}
	}
	a.applied, a.system, a.ready = event.LSN(p.CommitLSN), p.SourceSystem, true
	a.svc.applied.Store(uint64(p.CommitLSN))
	a.svc.setState("applying")
	a.log.Info("applying", "after", p.CommitLSN, "origin", origin)
	return nil
}

// beginGroup opens a target transaction and locks the source's progress
// row; a position moved by another applier since this one last looked moves
// this one's too.
func (a *applier) beginGroup(ctx context.Context) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(catalog.LockProgressSQL, a.svc.cfg.Source)
	br := a.conn.SendBatch(context.WithoutCancel(ctx), b)
	a.group = &group{started: time.Now()}
	var stored string
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
	lsn, err := pglogrepl.ParseLSN(stored)
	if err != nil {
		return err
	}
	if event.LSN(lsn) > a.applied {
		a.applied = event.LSN(lsn)
	}
	return nil
}

// commitGroup sends what is planned, records the position and the origin's
// progress, commits, and only then acknowledges.
func (a *applier) commitGroup(ctx context.Context) error {
	g := a.group
	if g.last == nil {
		a.rollback()
		a.unacked = g.ackID
		return a.ack()
	}
	if err := a.wait(); err != nil {
		return err
	}
	queries := a.plan.take()
	queries = append(queries,
		query{sql: catalog.OriginXactSQL, args: []any{g.last.EndLSN.String(), g.last.CommitTime}, expect: -1},
		query{sql: catalog.RecordProgressSQL, args: []any{a.svc.cfg.Source, a.topic, a.system, g.last.LSN.String(), g.last.EndLSN.String(), g.lastID.String(), g.last.CommitTime}, expect: 1},
		query{sql: "COMMIT", expect: -1},
	)
	if err := a.exec(ctx, queries); err != nil {
		return err
	}
	took := time.Since(g.started)
	a.group = nil
	a.unacked = g.ackID
	s := a.svc
	s.applied.Store(uint64(g.last.LSN))
	s.lag.Store(int64(time.Since(g.last.CommitTime)))
	if s.blocked.Swap(false) {
		a.log.Info("apply unblocked")
	}
	s.metrics.committed(g.txns, g.rows, took)
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

// blame names what a failed statement was about. Data exceptions (22),
// integrity violations (23) and undefined objects or mismatched types (42)
// will fail again on every retry until someone fixes the target.
func (a *applier) blame(q query, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || q.table == "" {
		return fmt.Errorf("apply: %w", err)
	}
	switch pgErr.Code[:2] {
	case "22", "23", "42":
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
	return fmt.Errorf("apply to %s: %w", q.table, err)
}

// rollback abandons the open target transaction, if any; its messages are
// redelivered to the next session.
func (a *applier) rollback() {
	_ = a.wait()
	if a.group == nil {
		return
	}
	a.group = nil
	a.plan.take()
	if !a.conn.IsClosed() && a.conn.PgConn().TxStatus() != 'I' {
		_, _ = a.conn.Exec(context.Background(), "ROLLBACK")
	}
}

// stop ends the session on request: the open target transaction is
// committed when it holds only whole source transactions, else rolled back.
func (a *applier) stop() error {
	a.svc.setState("stopping")
	if a.group != nil && a.cur == nil {
		if err := a.commitGroup(context.Background()); err != nil {
			a.log.Warn("commit on shutdown", "err", err)
		}
	}
	if a.cur != nil {
		// The rest of the source transaction is still in the topic.
		a.plan.take()
	}
	a.log.Info("stopped", "applied", pglogrepl.LSN(a.applied))
	return nil
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
