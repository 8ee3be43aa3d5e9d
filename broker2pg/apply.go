package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/semaphore"

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

// applier is the loop of one session: it reads the topic's messages in
// order, checks that they form whole source transactions, and plans their
// changes. One target transaction (targettxn.go) takes consecutive source
// transactions until a bound of Config is reached or no message is waiting,
// and ends with the update of apply_progress and the origin's position;
// only after its COMMIT are the messages acknowledged.
type applier struct {
	svc      *Service
	log      *slog.Logger
	conn     *pgx.Conn
	topic    string
	consumer pulsar.Consumer
	schema   *schemaCache
	plan     *plan

	ready   bool      // origin set up, progress read
	applied event.LSN // commit LSN of the last source transaction applied or in the open target transaction
	system  string    // source system id the target's progress belongs to

	cur *sourceTxn
	// targetTxn is the open target transaction, nil between two.
	targetTxn *targetTxn
	// decoded carries messages from the decoding goroutine; ahead bounds
	// the payload bytes decoded and not yet applied, since a decoded frame
	// takes several times its payload in memory.
	decoded chan decoded
	ahead   *semaphore.Weighted
	// inflight, when not nil, delivers the result of the flush running on
	// its own goroutine; nothing else uses the connection until it has.
	inflight chan error
	// unacked is the last message handled outside a target transaction (a
	// skipped source transaction), acknowledged with the next target
	// transaction or right away.
	unacked pulsar.MessageID
	// Target transactions commit with synchronous_commit = off, as native
	// logical replication's apply worker does: a commit does not wait for
	// its fsync, which on a small machine competes with every commit of
	// the clusters around it. Its messages are acknowledged once the
	// target's WAL is flushed past it (flushWait, oldest first); a crash of
	// the target loses only commits whose messages the broker still holds.
	// insertLSN and flushLSN are the target's WAL positions as last read.
	// With committedDurable (synchronous standbys) a commit is durable
	// once it returns, and its messages are acknowledged then.
	flushWait           []flushWait
	insertLSN, flushLSN pglogrepl.LSN
	committedDurable    bool
	// skips are the changes an operator recorded in pgtandem.apply_skips
	// that this session has not met yet.
	skips map[skipKey]recordedSkip
	// pendingBegun tells whether a source transaction was begun since the
	// last target commit, which then holds Service.oldestPending.
	pendingBegun bool
	// blockedRow tells whether apply_progress still holds where the apply
	// was blocked; the next commit clears it.
	blockedRow bool
}

// sourceTxn is the source transaction being received.
type sourceTxn struct {
	lsn  event.LSN
	next int // seq expected next
	skip bool
}

func (a *applier) run(ctx context.Context, active <-chan activeChange) error {
	defer a.rollback()
	quit := make(chan struct{})
	decoderDone := make(chan struct{})
	// The decoder's context ends with the session, which also ends a wait
	// for the decoding budget.
	decodeCtx, cancelDecode := context.WithCancel(context.WithoutCancel(ctx))
	go a.decode(decodeCtx, quit, decoderDone)
	defer func() {
		close(quit)
		cancelDecode()
		<-decoderDone
	}()
	wasActive := false
	flushTimer := time.NewTimer(flushPoll)
	defer flushTimer.Stop()
	for {
		var flushed <-chan time.Time
		if a.awaitingFlush() {
			flushTimer.Reset(flushPoll)
			flushed = flushTimer.C
		}
		select {
		case <-ctx.Done():
			return a.stop()
		case <-flushed:
			if err := a.pollFlush(ctx); err != nil {
				return err
			}
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
			err := a.handle(ctx, d)
			a.ahead.Release(d.weight)
			if err != nil {
				if IsBlocked(err) {
					a.svc.notePending(d.msg.EventTime(), d.msg.PublishTime())
				}
				return err
			}
		}
	}
}

// decoded is a message with its frame's events, or why it is not a frame.
type decoded struct {
	msg   pulsar.Message
	frame *event.Frame
	evs   []*event.Event
	err   error
	// weight is what it holds of the decoding budget (decodedAheadBytes).
	weight int64
}

// decode turns messages into events on a goroutine of its own, so that
// decoding overlaps with planning and the target's work; it ends when quit
// closes.
func (a *applier) decode(ctx context.Context, quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	dec := event.NewDecoder()
	for {
		select {
		case <-quit:
			return
		case cm, ok := <-a.consumer.Chan():
			if !ok {
				close(a.decoded)
				return
			}
			d := decoded{msg: cm.Message, weight: min(max(int64(len(cm.Message.Payload())), 1), decodedAheadBytes)}
			if err := a.ahead.Acquire(ctx, d.weight); err != nil {
				return // the session ends
			}
			if d.frame, d.err = dec.Decode(cm.Message.Payload()); d.err == nil {
				d.evs = d.frame.Events()
			}
			select {
			case a.decoded <- d:
			case <-quit:
				return
			}
		}
	}
}

// handle applies one message: the events of one frame, in order.
func (a *applier) handle(ctx context.Context, d decoded) error {
	msg := d.msg
	if !a.ready {
		if err := a.setup(ctx, d); err != nil {
			return err
		}
	}
	if d.err != nil {
		return &BlockedError{MessageID: msg.ID().String(), Reason: d.err.Error() + "; the message cannot be applied: remove it from the topic only if you know what it held", Err: d.err}
	}
	if sys := d.frame.SystemID; sys != "" && a.system != "" && sys != a.system {
		return &IdentityError{Source: a.svc.cfg.Source, StoredSystem: a.system, EventSystem: sys}
	} else if a.system == "" {
		a.system = sys
	}
	// The frame's bytes, spread over its changes, count against the target
	// transaction's byte bound.
	size := len(msg.Payload()) / max(1, len(d.frame.Changes))
	for _, ev := range d.evs {
		var err error
		switch ev.Kind {
		case event.KindBegin:
			err = a.begin(ctx, ev, msg)
		case event.KindCommit:
			err = a.commit(ctx, ev, msg)
		default:
			err = a.change(ctx, ev, msg, size)
		}
		if err != nil {
			return err
		}
	}
	return nil
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
	if a.targetTxn == nil {
		if err := a.beginTargetTxn(ctx); err != nil {
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
	if !a.pendingBegun {
		a.pendingBegun = true
		a.svc.oldestPending.Store(ev.CommitTime.UnixNano())
	}
	return nil
}

func (a *applier) change(ctx context.Context, ev *event.Event, msg pulsar.Message, size int) error {
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
	if a.skipRecorded(ev, msg.ID()) {
		return nil
	}
	if err := checkOldRow(ev, msg.ID()); err != nil {
		return err
	}
	a.targetTxn.rows++
	a.targetTxn.bytes += size
	if err := a.plan.add(ctx, ev, msg.ID(), size); err != nil {
		return atChange(err, ev)
	}
	if a.plan.strict {
		return a.execChange(ctx, ev, msg.ID())
	}
	if a.plan.rows >= a.svc.cfg.FlushRows || a.plan.bytes >= a.svc.cfg.GroupBytes/4 {
		return a.flushAsync(ctx, a.plan.take())
	}
	return nil
}

// execChange sends the statements of one change right away, on their own:
// in strict order a failure, or a row count other than the source's, is
// then that change's, and names it exactly.
func (a *applier) execChange(ctx context.Context, ev *event.Event, msgID pulsar.MessageID) error {
	if err := a.wait(); err != nil {
		return err
	}
	return a.exec(ctx, a.plan.take(), &changeAt{ev: ev, msgID: msgID})
}

// checkOldRow refuses a change whose old row cannot identify the row it
// changed: an UPDATE of a table published with REPLICA IDENTITY FULL that
// carries no old row at all (PostgreSQL always sends the whole old row for
// FULL, except for a partition with an identity of its own published
// through its root).
func checkOldRow(ev *event.Event, msgID pulsar.MessageID) error {
	if ev.Kind != event.KindUpdate || ev.ReplicaIdentity != "full" || ev.Old != nil {
		return nil
	}
	ri := &ReplicaIdentityError{Table: ev.QualifiedTable().String(), Kind: string(ev.Kind), LSN: ev.LSN.String(), Change: ev.Seq, MessageID: idString(msgID)}
	return &BlockedError{Table: ri.Table, MessageID: ri.MessageID, LSN: ri.LSN, Change: ri.Change, Reason: ri.Error(), Err: ri}
}

// atChange completes a *BlockedError about the change being planned (a
// table or column the target lacks) with the change's position; an error
// of an earlier flush, which planning may return, is left as it is.
func atChange(err error, ev *event.Event) error {
	var be *BlockedError
	if errors.As(err, &be) && !be.batch && be.LSN == ev.LSN.String() && be.Change == 0 {
		be.Change = ev.Seq
	}
	return err
}

func (a *applier) commit(ctx context.Context, ev *event.Event, msg pulsar.Message) error {
	switch {
	case a.cur != nil && ev.LSN < a.cur.lsn:
		return nil
	case a.cur == nil && ev.LSN <= a.applied:
		// The end of a transaction already applied, redelivered without
		// its beginning: acknowledged, or it would stay in the backlog.
		return a.skipped(ctx, msg)
	case a.cur == nil || ev.LSN != a.cur.lsn:
		return &FramingError{MessageID: msg.ID().String(), Reason: fmt.Sprintf("COMMIT of %s outside its transaction", ev.LSN)}
	case a.cur.skip:
		a.cur = nil
		return a.skipped(ctx, msg)
	case ev.Seq != a.cur.next || ev.Rows != a.cur.next-1:
		return &FramingError{MessageID: msg.ID().String(), Reason: fmt.Sprintf("COMMIT of %s seq %d rows %d after seq %d", ev.LSN, ev.Seq, ev.Rows, a.cur.next-1)}
	}
	a.cur = nil
	a.applied = ev.LSN
	tx := a.targetTxn
	tx.sourceTxns++
	tx.lastCommit, tx.lastCommitID = ev, msg.ID()
	tx.ackUpTo(msg.ID())
	return a.endOfSourceTxn(ctx)
}

// skipped acknowledges the COMMIT of a source transaction the target
// already holds: with the open target transaction, or right away.
func (a *applier) skipped(ctx context.Context, msg pulsar.Message) error {
	if a.targetTxn == nil {
		a.unacked = msg.ID()
		a.settlePending(time.Time{})
		return a.ack()
	}
	a.targetTxn.ackUpTo(msg.ID())
	return a.endOfSourceTxn(ctx)
}

// endOfSourceTxn commits the target transaction when nothing more is
// waiting or a bound is reached; a target transaction must never stay open
// once the topic is read, whether its last source transaction was applied
// or skipped.
//
// In strict order every source transaction is committed on its own, so that
// a change that blocks leaves every transaction before it applied.
func (a *applier) endOfSourceTxn(ctx context.Context) error {
	tx, cfg := a.targetTxn, a.svc.cfg
	if !a.waiting() || a.plan.strict || tx.rows >= cfg.GroupRows || tx.bytes >= cfg.GroupBytes || time.Since(tx.started) >= cfg.GroupDelay {
		return a.commitTargetTxn(ctx)
	}
	return nil
}

// waiting tells whether more messages are at hand.
func (a *applier) waiting() bool { return len(a.decoded) > 0 || len(a.consumer.Chan()) > 0 }

// setup prepares the target on the first message this consumer receives,
// that is once it is the active one: a standby must not hold the origin.
func (a *applier) setup(ctx context.Context, d decoded) error {
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
	if d.frame != nil && p.SourceSystem != "" && d.frame.SystemID != "" && d.frame.SystemID != p.SourceSystem {
		return &IdentityError{Source: a.svc.cfg.Source, StoredSystem: p.SourceSystem, EventSystem: d.frame.SystemID}
	}
	if a.skips, err = loadSkips(ctx, a.conn, a.svc.cfg.Source, p.CommitLSN); err != nil {
		return err
	}
	// The stored position may come from a commit not flushed yet (an
	// earlier session's): messages skipped by it wait for the flush too.
	if err := a.conn.QueryRow(ctx, walPositionsSQL).Scan(&a.insertLSN, &a.flushLSN); err != nil {
		return fmt.Errorf("read the target's WAL positions: %w", err)
	}
	a.applied, a.system, a.ready = event.LSN(p.CommitLSN), p.SourceSystem, true
	a.blockedRow = p.BlockedReason != ""
	a.svc.applied.Store(uint64(p.CommitLSN))
	a.svc.setState("applying")
	a.log.Info("applying", "after", p.CommitLSN, "origin", origin)
	return nil
}

// stop ends the session on request: the open target transaction is
// committed when it holds only whole source transactions, else rolled back.
func (a *applier) stop() error {
	a.svc.setState("stopping")
	if a.targetTxn != nil && a.cur == nil {
		if err := a.commitTargetTxn(context.Background()); err != nil {
			a.log.Warn("commit on shutdown", "err", err)
		}
	}
	if a.cur != nil {
		// The rest of the source transaction is still in the topic.
		a.plan.take()
	}
	if a.awaitingFlush() {
		// So that a restart does not receive again what was applied:
		// best effort, a redelivery is skipped by the stored position.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := a.pollFlush(ctx); err != nil {
			a.log.Warn("acknowledge on shutdown", "err", err)
		}
		cancel()
	}
	a.log.Info("stopped", "applied", pglogrepl.LSN(a.applied))
	return nil
}

// describeKey prints the old values a change is matched by, as
// ("col", ...)=('value', ...): its replica identity columns (every column
// for REPLICA IDENTITY FULL), from its old row, or from its new row when
// it carries none (an UPDATE that kept its key). Long values are cut.
func describeKey(ev *event.Event) string {
	row := ev.Old
	if row == nil {
		row = ev.New
	}
	keyed := slices.ContainsFunc(ev.Columns, func(c event.Column) bool { return c.Key })
	var names, values []string
	for _, c := range ev.Columns {
		v, ok := row[c.Name]
		if !ok || keyed && !c.Key {
			continue
		}
		names = append(names, event.QuoteIdent(c.Name))
		if v == nil {
			values = append(values, "NULL")
			continue
		}
		s := *v
		if r := []rune(s); len(r) > 64 {
			s = string(r[:64]) + "…"
		}
		values = append(values, "'"+strings.ReplaceAll(s, "'", "''")+"'")
	}
	return "(" + strings.Join(names, ", ") + ")=(" + strings.Join(values, ", ") + ")"
}
