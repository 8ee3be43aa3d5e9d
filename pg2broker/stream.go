package pg2broker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// stream is the reading loop of one session.
type stream struct {
	svc     *Service
	log     *slog.Logger
	topic   string
	slot    string
	major   int
	system  string
	conn    *pgx.Conn
	repl    *pgconn.PgConn
	pub     *publisher
	tracker *ackTracker
	resume  *resume
	dec     *decoder
	framer  *event.Framer
	// awaited is set while the transaction being framed holds an in-band
	// row: its last frame goes to the broker at once (see publish).
	awaited bool
	// sends is the context of every send to the broker and every wait for
	// its acknowledgements: it ends Config.StopTimeout after the session's
	// (see graceContext), so that what was read before a stop is still
	// delivered and confirmed, and a broker that does not answer holds the
	// stop no longer than that.
	sends context.Context
}

// run reads the slot and handles its messages, status reports and shutdown
// on one goroutine. The walsender streams without waiting for replies, so
// the socket's buffer already overlaps its work with decoding and
// publishing; a reading goroutine of its own cost a wake-up and a read per
// message (a third of the capture's CPU in BenchmarkCaptureDrain) where a
// read on this goroutine takes whatever has accumulated.
//
// A read waits at most until the next status report: the deadline is set on
// the socket (a timeout leaves pgconn's connection usable), and ctx's end
// moves it to now.
func (st *stream) run(ctx context.Context) error {
	sock := st.repl.Conn()
	// The session is over when run returns: closing the socket first keeps
	// the session's Close from waiting on a server that stopped answering.
	defer sock.Close()
	stopWake := context.AfterFunc(ctx, func() { _ = sock.SetReadDeadline(time.Now()) })
	defer stopWake()
	sends, cancelSends := graceContext(ctx, st.svc.cfg.StopTimeout)
	defer cancelSends()
	st.sends = sends

	interval := st.svc.cfg.StatusInterval
	var nextStatus time.Time
	arm := func(now time.Time) error {
		nextStatus = now.Add(interval)
		if err := sock.SetReadDeadline(nextStatus); err != nil {
			return fmt.Errorf("set read deadline on the replication connection: %w", err)
		}
		return nil
	}
	nextLag := time.Now()
	if err := arm(nextLag); err != nil {
		return err
	}
	for {
		if _, err := st.tracker.position(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return st.stop()
		}
		if now := time.Now(); !now.Before(nextStatus) {
			if err := st.sendStatus(); err != nil {
				return err
			}
			if now.After(nextLag) {
				st.measureLag(ctx)
				nextLag = now.Add(5 * time.Second)
			}
			if err := arm(now); err != nil {
				return err
			}
			// ctx may have ended before the new deadline replaced the one
			// its AfterFunc set.
			continue
		}
		raw, err := st.repl.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			if ctx.Err() != nil {
				return st.stop()
			}
			return slotErr(ctx, st.conn, st.major, st.slot, fmt.Errorf("receive from slot: %w", err))
		}
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			// msg.Data lies in pgconn's buffer, which the next read reuses:
			// the decoder copies what it keeps.
			replyNow, err := st.handle(ctx, msg.Data)
			if err != nil {
				if ctx.Err() != nil {
					// Asked to stop while waiting for the broker: confirm
					// what it acknowledged meanwhile.
					st.log.Warn("stopped while waiting for the broker", "err", err)
					return st.stop()
				}
				return err
			}
			if replyNow {
				if err := st.sendStatus(); err != nil {
					return err
				}
			}
		case *pgproto3.ErrorResponse:
			return slotErr(ctx, st.conn, st.major, st.slot, pgconn.ErrorResponseToPgError(msg))
		}
	}
}

// handle processes one message of the slot; it reports whether the server
// asked for a status report right away.
func (st *stream) handle(ctx context.Context, data []byte) (replyNow bool, err error) {
	if len(data) == 0 {
		return false, nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, &ProtocolError{Reason: "keepalive: " + err.Error()}
		}
		st.tracker.idleAdvance(pkm.ServerWALEnd, st.dec.begin != nil)
		return pkm.ReplyRequested, nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, &ProtocolError{Reason: "XLogData: " + err.Error()}
		}
		events, err := st.dec.decode(ctx, xld.WALStart, xld.WALData)
		if err != nil {
			return false, err
		}
		for _, ev := range events {
			if err := st.publish(ev); err != nil {
				return false, err
			}
		}
		if end, ok := st.dec.takeSkipped(); ok {
			st.tracker.txnEnd(end, time.Time{})
		}
	}
	return false, nil
}

// publish hands one event to the framer, and a frame it completes to the
// producer; the acknowledgement arrives on the client's goroutine and feeds
// the tracker.
func (st *stream) publish(ev *event.Event) error {
	if st.resume.published(ev) {
		if ev.Kind == event.KindCommit {
			st.tracker.txnEnd(pglogrepl.LSN(ev.EndLSN), time.Time{})
		}
		return nil
	}
	if catalog.IsInBand(ev.Schema, ev.Table) {
		st.awaited = true
	}
	f, err := st.framer.Add(ev)
	if err != nil {
		return &ProtocolError{LSN: pglogrepl.LSN(ev.LSN), Reason: "frame: " + err.Error()}
	}
	if f == nil {
		return nil
	}
	msg := &pulsar.ProducerMessage{Payload: f.Payload, EventTime: f.CommitTime}
	n := st.tracker.sent()
	var sentAt time.Time
	if f.Last {
		sentAt = time.Now()
	}
	m := st.svc.metrics
	done := func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
		if err != nil {
			err = &PublishError{Topic: st.topic, LSN: f.LSN.String(), Fragment: f.Fragment, Err: err}
		} else {
			m.published(f, sentAt)
		}
		st.tracker.ack(n, err)
	}
	if len(f.Payload) > st.svc.cfg.LargeMessage {
		if err := st.sendLarge(msg, done); err != nil {
			return err
		}
	} else {
		// On the sends' context, not the session's: on shutdown the
		// messages already read are still delivered, then confirmed.
		st.pub.producer.SendAsync(st.sends, msg, done)
	}
	if f.Last {
		st.tracker.txnEnd(pglogrepl.LSN(f.EndLSN), f.CommitTime)
		if st.awaited {
			// A switch waits for this transaction with clients paused:
			// send the batch now and wait for the broker (a few ms), rather
			// than let it wait out the batching delay. Nothing else is
			// read meanwhile, which keeps the order of the topic.
			st.awaited = false
			if err := st.pub.drain(st.sends); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendLarge publishes an event too large for one message as chunks. The
// batching producer is drained first and the chunked send awaited, so that
// no message overtakes another on the topic.
func (st *stream) sendLarge(msg *pulsar.ProducerMessage, done func(pulsar.MessageID, *pulsar.ProducerMessage, error)) error {
	if err := st.pub.drain(st.sends); err != nil {
		return err
	}
	id, err := st.pub.chunker.Send(st.sends, msg)
	done(id, msg, err)
	if err != nil {
		_, err = st.tracker.position()
	}
	return err
}

// sendStatus reports the confirmed position, explicitly as write, flush and
// apply position: pglogrepl would copy the write position into a zero flush
// position and so confirm what the broker does not hold.
func (st *stream) sendStatus() error {
	pos, err := st.tracker.position()
	if err != nil {
		return err
	}
	if pos == 0 {
		return nil
	}
	err = pglogrepl.SendStandbyStatusUpdate(context.Background(), st.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos,
		WALFlushPosition: pos,
		WALApplyPosition: pos,
	})
	if err != nil {
		return fmt.Errorf("send status update: %w", err)
	}
	return nil
}

func (st *stream) measureLag(ctx context.Context) {
	var current pglogrepl.LSN
	if err := st.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&current); err != nil {
		return
	}
	pos, _ := st.tracker.position()
	if current > pos {
		st.svc.lagByte.Store(int64(current - pos))
	} else {
		st.svc.lagByte.Store(0)
	}
}

// stop ends a session on request: stop reading, let the broker acknowledge
// what was sent (until the sends' context ends), confirm it, and return nil.
func (st *stream) stop() error {
	st.svc.setState("stopping")
	if err := st.pub.drain(st.sends); err != nil {
		st.log.Warn("flush on shutdown", "err", err, "cause", context.Cause(st.sends))
	}
	if err := st.sendStatus(); err != nil {
		return err
	}
	pos, _ := st.tracker.position()
	st.log.Info("stopped", "confirmed", pos)
	return nil
}

// graceContext returns a context that ends grace after parent does, or when
// the returned cancel is called; its cause then says the stop timeout
// expired.
func graceContext(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	var mu sync.Mutex
	var timer *time.Timer
	stopAfter := context.AfterFunc(parent, func() {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() == nil {
			timer = time.AfterFunc(grace, func() {
				cancel(fmt.Errorf("the broker did not acknowledge within the stop timeout (%s)", grace))
			})
		}
	})
	return ctx, func() {
		stopAfter()
		mu.Lock()
		defer mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		cancel(context.Canceled)
	}
}
