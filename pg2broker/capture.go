package pg2broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/telemetry"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// Service is one capture: a source cluster's slot streamed into its topic.
type Service struct {
	cfg     Config
	log     *slog.Logger
	tel     *telemetry.Telemetry
	metrics *metrics

	// state is what /readyz and the logs tell: "streaming" is ready,
	// anything else is not.
	pub *publisher

	state   atomic.Pointer[string]
	tracker atomic.Pointer[ackTracker]
	lagByte atomic.Int64
}

// New checks cfg and prepares the service; nothing connects until Run.
func New(cfg Config, log *slog.Logger, tel *telemetry.Telemetry) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log.With("cluster", cfg.Cluster), tel: tel}
	s.pub = &publisher{cfg: cfg, log: s.log, reg: tel.Registry}
	s.setState("starting")
	m, err := newMetrics(tel.Meter, s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

func (s *Service) setState(state string) { s.state.Store(&state) }

// Confirmed returns the position last confirmable to PostgreSQL: every
// change committed before it is held by the broker.
func (s *Service) Confirmed() pglogrepl.LSN {
	t := s.tracker.Load()
	if t == nil {
		return 0
	}
	pos, _ := t.position()
	return pos
}

// Ready reports nil while changes are being streamed.
func (s *Service) Ready() error {
	if st := *s.state.Load(); st != "streaming" {
		return errors.New(st)
	}
	return nil
}

// Run streams until ctx ends (then it flushes, confirms and returns nil) or
// a fatal error stops it. Transient failures (a server or the broker
// unreachable, a connection cut) are retried with backoff from the last
// confirmed position, which never passes data the broker does not hold.
func (s *Service) Run(ctx context.Context) error {
	defer s.pub.close()
	backoff := 500 * time.Millisecond
	for {
		started := time.Now()
		err := s.session(ctx)
		s.afterSession(ctx, err)
		if ctx.Err() != nil {
			s.setState("stopped")
			return nil
		}
		if err == nil {
			return nil
		}
		if IsFatal(err) {
			s.setState("failed: " + err.Error())
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = 500 * time.Millisecond
		}
		s.setState("retrying: " + err.Error())
		s.log.Warn("capture interrupted; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			s.setState("stopped")
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

// afterSession leaves the publisher ready for the next session: everything
// sent is acknowledged (the next session's resume point is read from the
// topic), or, after a publish error, the producers are recreated.
func (s *Service) afterSession(ctx context.Context, err error) {
	var pe *PublishError
	if errors.As(err, &pe) {
		s.pub.close()
		return
	}
	if drainErr := s.pub.drain(ctx); drainErr != nil && ctx.Err() == nil {
		s.log.Warn("could not drain the producer; recreating it", "err", drainErr)
		s.pub.close()
	}
}

// session runs one connected attempt: preflight, slot ownership, producer,
// resume point, stream.
func (s *Service) session(ctx context.Context) error {
	s.setState("connecting")
	conn, err := pgx.Connect(ctx, s.cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())

	src, err := preflight(ctx, conn, s.cfg)
	if err != nil {
		return err
	}
	topic := s.cfg.Topic
	if topic == "" {
		topic = catalog.Topic(s.cfg.TopicPrefix, src.Major)
	}
	slot := catalog.SlotName(s.cfg.Cluster)
	log := s.log.With("slot", slot, "topic", topic)
	if !src.slotMissing {
		if err := s.waitSlotFree(ctx, conn, slot, log); err != nil {
			return err
		}
	}

	if err := s.pub.open(topic); err != nil {
		return err
	}
	tail, err := readTail(ctx, s.pub.client, topic)
	if err != nil {
		return err
	}
	if tail != nil && tail.system != "" && tail.system != src.SystemID {
		return &TopicMismatchError{Topic: topic, TopicSystem: tail.system, SourceSystem: src.SystemID}
	}
	if src.slotMissing {
		if tail != nil {
			// The topic was fed from a slot that no longer exists: a new slot
			// would start at the present and skip whatever came between.
			return &SlotError{Slot: slot, Reason: fmt.Sprintf("does not exist, but topic %s holds changes up to %s: the slot was dropped, and changes since then are lost to this topic; synchronise the target again with pgtandem init and use a new topic", topic, tail.lsn)}
		}
		if src.confirmed, err = createSlot(ctx, conn, slot); err != nil {
			return err
		}
		log.Info("created slot", "at", src.confirmed)
	}

	repl, err := replicationConn(ctx, s.cfg.DSN)
	if err != nil {
		return err
	}
	defer repl.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, repl, slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: pluginArgs(src.Major)})
	if err != nil {
		return slotErr(slot, fmt.Errorf("start replication from slot %s: %w", slot, err))
	}
	tracker := newAckTracker(src.confirmed)
	s.tracker.Store(tracker)
	st := &stream{
		svc: s, log: log, topic: topic, system: src.SystemID, conn: conn, repl: repl, pub: s.pub,
		tracker: tracker, resume: newResume(tail), dec: newDecoder(typeNamer(conn), catalog.OriginPrefix),
	}
	log.Info("streaming", "from", src.confirmed, "pg_major", src.Major, "resume_after", tail)
	s.setState("streaming")
	return st.run(ctx)
}

// waitSlotFree waits while another process streams from the slot: a second
// replica is a standby that takes over when the active one goes away.
func (s *Service) waitSlotFree(ctx context.Context, conn *pgx.Conn, slot string, log *slog.Logger) error {
	announced := false
	for {
		var pid *int32
		err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return &SlotError{Slot: slot, Reason: "disappeared while waiting for it"}
		}
		if err != nil {
			return fmt.Errorf("read slot %s: %w", slot, err)
		}
		if pid == nil {
			return nil
		}
		if !announced {
			log.Info("slot is in use by another capture; waiting as standby", "active_pid", *pid)
			announced = true
		}
		s.setState(fmt.Sprintf("standby: slot %s is active for pid %d", slot, *pid))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func replicationConn(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse source DSN: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replication connection to source: %w", err)
	}
	return conn, nil
}

// pluginArgs asks each major for the newest pgoutput protocol it speaks
// (without streaming of in-progress transactions: events are published in
// commit order), for logical messages where supported, and on 16+ for
// transactions without a replication origin only.
func pluginArgs(major int) []string {
	proto := 1
	switch {
	case major >= 16:
		proto = 4
	case major == 15:
		proto = 3
	case major == 14:
		proto = 2
	}
	args := []string{fmt.Sprintf("proto_version '%d'", proto), "publication_names '" + catalog.PublicationName + "'"}
	if major >= 14 {
		args = append(args, "messages 'true'")
	}
	if major >= 16 {
		args = append(args, "origin 'none'")
	}
	return args
}

// slotErr turns the server's answers about a missing or invalidated slot
// into a fatal *SlotError; anything else stays retryable.
func slotErr(slot string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == "42704":
		return &SlotError{Slot: slot, Reason: "was dropped: " + pgErr.Message}
	case pgErr.Code == "55000" && (strings.Contains(pgErr.Message, "invalidated") || strings.Contains(pgErr.Message, "can no longer")):
		return &SlotError{Slot: slot, Reason: "is invalidated: " + pgErr.Message}
	}
	return err
}

// tail is the last message of the topic: where a restarted capture resumes.
type tail struct {
	lsn    event.LSN
	seq    int
	system string
}

func (t *tail) String() string {
	if t == nil {
		return "empty topic"
	}
	return fmt.Sprintf("lsn %s seq %d", t.lsn, t.seq)
}

// readTail reads the topic's last message. The topic, not the slot, is the
// record of what was published: the slot's confirmed position may lag it.
func readTail(ctx context.Context, client pulsar.Client, topic string) (*tail, error) {
	reader, err := client.CreateReader(pulsar.ReaderOptions{
		Topic:                   topic,
		StartMessageID:          pulsar.LatestMessageID(),
		StartMessageIDInclusive: true,
	})
	if err != nil {
		return nil, fmt.Errorf("read the last message of %s: %w", topic, err)
	}
	defer reader.Close()
	if !reader.HasNext() {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := reader.Next(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the last message of %s: %w", topic, err)
	}
	props := msg.Properties()
	var t tail
	var lsn pglogrepl.LSN
	if lsn, err = pglogrepl.ParseLSN(props[event.PropLSN]); err != nil {
		return nil, fmt.Errorf("last message %s of %s has no valid %s property (not a pgtandem topic?): %w", msg.ID(), topic, event.PropLSN, err)
	}
	t.lsn = event.LSN(lsn)
	if t.seq, err = strconv.Atoi(props[event.PropSeq]); err != nil {
		return nil, fmt.Errorf("last message %s of %s has no valid %s property: %w", msg.ID(), topic, event.PropSeq, err)
	}
	t.system = props[event.PropSystem]
	return &t, nil
}

// resume drops the messages a previous run already published: every
// transaction that committed before the tail's, and the tail transaction's
// messages up to the tail's seq.
type resume struct {
	tail *tail
}

func newResume(t *tail) *resume { return &resume{tail: t} }

func (r *resume) published(ev *event.Event) bool {
	if r.tail == nil {
		return false
	}
	if ev.LSN < r.tail.lsn || (ev.LSN == r.tail.lsn && ev.Seq <= r.tail.seq) {
		return true
	}
	if ev.LSN > r.tail.lsn {
		r.tail = nil
	}
	return false
}

// stream is the reading loop of one session.
type stream struct {
	svc     *Service
	log     *slog.Logger
	topic   string
	system  string
	conn    *pgx.Conn
	repl    *pgconn.PgConn
	pub     *publisher
	tracker *ackTracker
	resume  *resume
	dec     *decoder
}

// walMessage is one message of the replication connection: a CopyData
// payload (copied out of the connection's buffer) or the error that ended
// reading.
type walMessage struct {
	data []byte
	err  error
}

// run reads the slot on a goroutine of its own, so that PostgreSQL's
// network round trips overlap with decoding and publishing, and handles the
// messages, status reports and shutdown here.
func (st *stream) run(ctx context.Context) error {
	msgs := make(chan walMessage, 1024)
	quit := make(chan struct{})
	readerDone := make(chan struct{})
	go st.read(msgs, quit, readerDone)
	defer func() {
		close(quit)
		// Closing the socket ends the reader's blocked receive.
		_ = st.repl.Conn().Close()
		<-readerDone
	}()

	ticker := time.NewTicker(st.svc.cfg.StatusInterval)
	defer ticker.Stop()
	nextLag := time.Now()
	for {
		if _, err := st.tracker.position(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return st.stop()
		case now := <-ticker.C:
			if err := st.sendStatus(); err != nil {
				return err
			}
			if now.After(nextLag) {
				st.measureLag(ctx)
				nextLag = now.Add(5 * time.Second)
			}
		case m := <-msgs:
			if m.err != nil {
				if ctx.Err() != nil {
					return st.stop()
				}
				return slotErr(catalog.SlotName(st.svc.cfg.Cluster), m.err)
			}
			replyNow, err := st.handle(ctx, m.data)
			if err != nil {
				return err
			}
			if replyNow {
				if err := st.sendStatus(); err != nil {
					return err
				}
			}
		}
	}
}

// read receives from the replication connection until it fails or quit
// closes. Status updates are written concurrently by run: pgconn's reading
// and writing sides are independent, and only run writes.
func (st *stream) read(msgs chan<- walMessage, quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	deliver := func(m walMessage) bool {
		select {
		case msgs <- m:
			return true
		case <-quit:
			return false
		}
	}
	for {
		raw, err := st.repl.ReceiveMessage(context.Background())
		if err != nil {
			deliver(walMessage{err: fmt.Errorf("receive from slot: %w", err)})
			return
		}
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			if !deliver(walMessage{data: bytes.Clone(msg.Data)}) {
				return
			}
		case *pgproto3.ErrorResponse:
			deliver(walMessage{err: pgconn.ErrorResponseToPgError(msg)})
			return
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

// publish hands one event to the producer; the acknowledgement arrives on
// the client's goroutine and feeds the tracker.
func (st *stream) publish(ev *event.Event) error {
	if st.resume.published(ev) {
		if ev.Kind == event.KindCommit {
			st.tracker.txnEnd(pglogrepl.LSN(ev.EndLSN), time.Time{})
		}
		return nil
	}
	payload, err := event.Marshal(ev)
	if err != nil {
		return &ProtocolError{LSN: pglogrepl.LSN(ev.LSN), Reason: "encode event: " + err.Error()}
	}
	props := ev.Properties()
	if ev.Kind == event.KindBegin || ev.Kind == event.KindCommit {
		props[event.PropSystem] = st.system
	}
	msg := &pulsar.ProducerMessage{
		Payload:    payload,
		Key:        ev.Key(),
		Properties: props,
		EventTime:  ev.CommitTime,
	}
	n := st.tracker.sent()
	var sentAt time.Time
	if ev.Kind == event.KindCommit {
		sentAt = time.Now()
	}
	m, kind, size := st.svc.metrics, ev.Kind, len(payload)
	done := func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
		if err != nil {
			err = &PublishError{Topic: st.topic, LSN: ev.LSN.String(), Seq: ev.Seq, Err: err}
		} else {
			m.published(kind, size, sentAt)
		}
		st.tracker.ack(n, err)
	}
	if len(payload) > st.svc.cfg.LargeMessage {
		if err := st.sendLarge(msg, done); err != nil {
			return err
		}
	} else {
		// Sends are not tied to the service's context: on shutdown the
		// messages already read are still delivered, then confirmed.
		st.pub.producer.SendAsync(context.Background(), msg, done)
	}
	if ev.Kind == event.KindCommit {
		st.tracker.txnEnd(pglogrepl.LSN(ev.EndLSN), ev.CommitTime)
	}
	return nil
}

// sendLarge publishes an event too large for one message as chunks. The
// batching producer is drained first and the chunked send awaited, so that
// no message overtakes another on the topic.
func (st *stream) sendLarge(msg *pulsar.ProducerMessage, done func(pulsar.MessageID, *pulsar.ProducerMessage, error)) error {
	if err := st.pub.drain(context.Background()); err != nil {
		return err
	}
	id, err := st.pub.chunker.Send(context.Background(), msg)
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
	var text string
	if err := st.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&text); err != nil {
		return
	}
	current, _ = pglogrepl.ParseLSN(text)
	pos, _ := st.tracker.position()
	if current > pos {
		st.svc.lagByte.Store(int64(current - pos))
	} else {
		st.svc.lagByte.Store(0)
	}
}

// stop ends a session on request: stop reading, let the broker acknowledge
// what was sent, confirm it, and return nil.
func (st *stream) stop() error {
	st.svc.setState("stopping")
	flushCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.pub.drain(flushCtx); err != nil {
		st.log.Warn("flush on shutdown", "err", err)
	}
	if err := st.sendStatus(); err != nil {
		return err
	}
	pos, _ := st.tracker.position()
	st.log.Info("stopped", "confirmed", pos)
	return nil
}
