package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/semaphore"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	"github.com/pgtandem/pgtandem/internal/retry"
	"github.com/pgtandem/pgtandem/internal/telemetry"
)

// Service is one apply: a source cluster's topic applied into a target.
type Service struct {
	cfg     Config
	log     *slog.Logger
	tel     *telemetry.Telemetry
	metrics *metrics

	// state is what /readyz and the logs tell: "applying" is ready,
	// anything else ("standby", "blocked: ...") is not.
	state   atomic.Pointer[string]
	applied atomic.Uint64 // commit LSN of the last applied source transaction
	// oldestPending is the source commit time (Unix nanoseconds) of the
	// oldest source transaction received and not applied, 0 when none is:
	// the lag is its age. It stays while the apply is blocked.
	oldestPending atomic.Int64
	// backlog is the subscription's backlog, or backlogUnknown.
	backlog    atomic.Int64
	blocked    atomic.Bool
	blockedErr atomic.Pointer[BlockedError]
	// topic is known once a session resolved it; the backlog poller reads it.
	topic atomic.Pointer[string]
	// lastBegun is the commit LSN of the last source transaction a session
	// started to apply; transactions up to strictUntil are applied in strict
	// source order (see plan.strict).
	lastBegun   atomic.Uint64
	strictUntil atomic.Uint64
	// lastFraming is the framing error that ended the previous session;
	// sessions run one at a time.
	lastFraming string
}

// New checks cfg and prepares the service; nothing connects until Run.
func New(cfg Config, log *slog.Logger, tel *telemetry.Telemetry) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log.With("source", cfg.Source, "target", cfg.Target), tel: tel}
	s.setState("starting")
	s.backlog.Store(backlogUnknown)
	m, err := newMetrics(tel.Meter, s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// backlogUnknown marks a backlog that has not been read, or cannot be.
const backlogUnknown = -1

func (s *Service) setState(state string) { s.state.Store(&state) }

// Ready reports nil while the service is the active applier and not blocked.
// decodedAhead is how many frames the decoding goroutine may hold decoded
// ahead of the apply, and decodedAheadBytes how many payload bytes: enough
// to overlap decoding with the target's work (many small frames), few
// enough that frames of thousands of changes, which decoded take several
// times their payload, stay bounded in memory.
const (
	decodedAhead      = 256
	decodedAheadBytes = 8 << 20
)

func (s *Service) Ready() error {
	if st := *s.state.Load(); st != "applying" {
		return errors.New(st)
	}
	return nil
}

// Blocked returns the *BlockedError the apply stands blocked at, nil while
// it is not blocked.
func (s *Service) Blocked() error {
	if be := s.blockedErr.Load(); be != nil {
		return be
	}
	return nil
}

// Lag is the age of the oldest source transaction received and not yet
// applied: 0 when the apply has nothing pending (idle and caught up, as far
// as the messages at hand tell), and while it is blocked the age of the
// transaction it holds back, growing.
func (s *Service) Lag() time.Duration {
	return lagSince(s.oldestPending.Load(), time.Now())
}

func lagSince(pending int64, now time.Time) time.Duration {
	if pending == 0 {
		return 0
	}
	return max(now.Sub(time.Unix(0, pending)), 0)
}

// notePending makes the first non-zero of times the oldest pending commit
// time when none is known: a message the apply is blocked at is pending,
// even when no transaction was begun (an undecodable message).
func (s *Service) notePending(times ...time.Time) {
	for _, t := range times {
		if !t.IsZero() {
			s.oldestPending.CompareAndSwap(0, t.UnixNano())
			return
		}
	}
}

// Run applies until ctx ends (it then finishes the open target transaction
// when it holds only whole source transactions, and returns nil) or a fatal
// error stops it. A blocked apply is retried every BlockedRetry; other
// failures with backoff. Every attempt starts from what the target holds.
func (s *Service) Run(ctx context.Context) error {
	client, err := pulsarclient.New(pulsarclient.Options{URL: s.cfg.PulsarURL, Token: s.cfg.PulsarToken, TLS: s.cfg.PulsarTLS, Log: s.log, Registerer: s.tel.Registry})
	if err != nil {
		return err
	}
	defer client.Close()
	var wg sync.WaitGroup
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer func() { stopPoll(); wg.Wait() }()
	if s.cfg.AdminURL != "" {
		backlog, err := NewBacklogReader(s.cfg.AdminURL, s.cfg.PulsarToken, s.cfg.PulsarTLS)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.pollBacklog(pollCtx, backlog) }()
	}
	backoff := retry.New(s.cfg.RetryMax)
	lastBlocked := ""
	for {
		started := time.Now()
		err := s.session(ctx, client)
		if ctx.Err() != nil {
			s.setState("stopped")
			return nil
		}
		if err == nil {
			return nil
		}
		if s.retryStrict(err) {
			continue
		}
		if !IsBlocked(err) {
			lastBlocked = ""
		}
		if IsFatal(err) {
			s.setState("failed: " + err.Error())
			return err
		}
		var wait time.Duration
		if be := (*BlockedError)(nil); errors.As(err, &be) {
			s.blockedErr.Store(be)
			s.blocked.Store(true)
			s.setState("blocked: " + err.Error())
			// Said once loudly, then quietly on every retry.
			if err.Error() != lastBlocked {
				s.log.Error("apply blocked; retrying until the target is fixed", "err", err, "every", s.cfg.BlockedRetry.String())
			} else {
				s.log.Debug("still blocked", "err", err)
			}
			lastBlocked = err.Error()
			wait = s.cfg.BlockedRetry
		} else {
			wait = backoff.Next(time.Since(started))
			s.setState("retrying: " + err.Error())
			s.log.Warn("apply interrupted; retrying", "err", err, "in", wait)
		}
		select {
		case <-ctx.Done():
			s.setState("stopped")
			return nil
		case <-time.After(wait):
		}
	}
}

// retryStrict reports whether err is a failure of a batch that applying
// the same transactions one change at a time, in source order, either
// avoids or pins on one change; it then arms that mode up to the last
// transaction begun. A unique violation can be an artefact of compacted
// statements (a swap of unique values through an intermediate one); any
// other failure of a statement of several changes, or a row count other
// than the source's, is named exactly in strict order, change by change. A
// failure that remains in strict order blocks.
func (s *Service) retryStrict(err error) bool {
	var be *BlockedError
	if !errors.As(err, &be) || !s.retryable(be) {
		return false
	}
	last := s.lastBegun.Load()
	s.strictUntil.Store(last)
	s.log.Info("a batch failed; applying it again one change at a time in source order", "table", be.Table, "reason", be.Reason, "until_lsn", event.LSN(last).String())
	return true
}

// pollBacklog keeps the backlog gauge up to date while the service runs.
func (s *Service) pollBacklog(ctx context.Context, backlog *BacklogReader) {
	ticker := time.NewTicker(5 * time.Second)
	defer ticker.Stop()
	failing := false
	for {
		s.readBacklog(ctx, backlog.Backlog, &failing)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// readBacklog reads the subscription's backlog into the gauge once a session
// has resolved the topic. A backlog that cannot be read leaves the gauge
// unobserved rather than at a misleading 0, and is logged as a warning when
// it starts failing, not on every poll; failing carries that from one poll
// to the next.
func (s *Service) readBacklog(ctx context.Context, read func(ctx context.Context, topic, subscription string) (int64, error), failing *bool) {
	topic := s.topic.Load()
	if topic == nil {
		return
	}
	n, err := read(ctx, *topic, catalog.SubscriptionName(s.cfg.Target))
	switch {
	case err == nil:
		s.backlog.Store(n)
		if *failing {
			s.log.Info("backlog readable again from the broker's admin API")
			*failing = false
		}
	case ctx.Err() != nil:
	case *failing:
		s.backlog.Store(backlogUnknown)
		s.log.Debug("backlog still unreadable", "err", err)
	default:
		s.backlog.Store(backlogUnknown)
		s.log.Warn("cannot read the subscription's backlog from the broker's admin API; the backlog metric is left out until it can", "err", err)
		*failing = true
	}
}

// session runs one connected attempt: target connection, topic, consumer,
// apply loop.
func (s *Service) session(ctx context.Context, client pulsar.Client) error {
	s.setState("connecting")
	conn, committedDurable, err := s.connectTarget(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	topic, err := s.resolveTopic(ctx, conn)
	if err != nil {
		return err
	}
	s.topic.Store(&topic)
	log := s.log.With("topic", topic)
	events := make(chan activeChange, 4)
	consumer, err := client.Subscribe(pulsar.ConsumerOptions{
		Topic:                       topic,
		SubscriptionName:            catalog.SubscriptionName(s.cfg.Target),
		Name:                        "pgtandem-broker2pg-" + s.cfg.Target + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Type:                        pulsar.Failover,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
		ReceiverQueueSize:           s.cfg.ReceiverQueue,
		EventListener:               activeListener(events),
	})
	if err != nil {
		return fmt.Errorf("subscribe %s to %s: %w", catalog.SubscriptionName(s.cfg.Target), topic, err)
	}
	defer consumer.Close()
	s.setState("standby: waiting to become the active consumer of " + catalog.SubscriptionName(s.cfg.Target))
	a := &applier{svc: s, log: log, conn: conn, topic: topic, consumer: consumer, decoded: make(chan decoded, decodedAhead),
		ahead: semaphore.NewWeighted(decodedAheadBytes), committedDurable: committedDurable}
	a.schema = newSchemaCache(conn, a.wait)
	a.plan = newPlan(a.schema)
	if a.plan.handoffs, err = readTableHandoffs(ctx, conn, s.cfg.Source); err != nil {
		return err
	}
	err = s.framingBlocks(a.run(ctx, events))
	var be *BlockedError
	if errors.As(err, &be) {
		be.Source, be.Target = s.cfg.Source, s.cfg.Target
		if a.ready && !s.retryable(be) {
			var pending time.Time
			if ns := s.oldestPending.Load(); ns != 0 {
				pending = time.Unix(0, ns)
			}
			recordBlocked(context.Background(), conn, s.cfg.Source, err, pending)
		}
	}
	return err
}

// retryable tells whether retryStrict takes a blocked error: a unique
// violation or a failure of a batch, while transactions begun are not all
// applied in strict order yet. Such an error is not recorded as a block.
func (s *Service) retryable(be *BlockedError) bool {
	return (be.batch || be.Code == pgerrcode.UniqueViolation) && s.lastBegun.Load() > s.strictUntil.Load()
}

// framingBlocks turns a framing error that ends two sessions in a row at
// the same message into a *BlockedError. Once, it can be a redelivery that a
// new session from the last acknowledged message sets right; twice, the
// topic itself lacks messages of a transaction, and only an operator can
// decide what to do, so it must show in status, metrics and /readyz.
func (s *Service) framingBlocks(err error) error {
	var fe *FramingError
	if !errors.As(err, &fe) {
		s.lastFraming = ""
		return err
	}
	if fe.Error() != s.lastFraming {
		s.lastFraming = fe.Error()
		return err
	}
	return &BlockedError{MessageID: fe.MessageID, Reason: "topic framing: " + fe.Reason +
		"; the topic does not hold this transaction whole (messages deleted or written by another producer): compare the topic with the source before moving the subscription past it"}
}

// connectTarget opens the apply session with the settings PostgreSQL's own
// apply worker uses: no triggers or foreign key checks (the source already
// ran them), and writable even when applications are fenced out by
// default_transaction_read_only.
func (s *Service) connectTarget(ctx context.Context) (conn *pgx.Conn, committedDurable bool, err error) {
	cfg, err := pgx.ParseConfig(s.cfg.TargetDSN)
	if err != nil {
		return nil, false, fmt.Errorf("parse target DSN: %w", err)
	}
	catalog.PinTextSettings(&cfg.Config)
	cfg.RuntimeParams["session_replication_role"] = "replica"
	cfg.RuntimeParams["default_transaction_read_only"] = "off"
	cfg.RuntimeParams["application_name"] = "pgtandem broker2pg " + s.cfg.Source
	if conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
		return nil, false, fmt.Errorf("connect to target: %w", err)
	}
	// Commits do not wait for their fsync, and acknowledgments wait for the
	// flush instead (see applier.flushWait), unless the target waits for
	// synchronous standbys: a flush on the primary alone does not make a
	// commit survive a failover to one of them, so commits wait for them
	// as the target is configured (synchronous_commit = off there is
	// raised to on) and are acknowledged once committed.
	var standbys, syncCommit string
	if err := conn.QueryRow(ctx, `SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit')`).Scan(&standbys, &syncCommit); err != nil {
		conn.Close(context.Background())
		return nil, false, fmt.Errorf("read synchronous_standby_names and synchronous_commit of the target: %w", err)
	}
	set, committedDurable := "off", false
	if standbys != "" {
		set, committedDurable = syncCommit, true
		if syncCommit == "off" || syncCommit == "local" {
			set = "on"
		}
	}
	if _, err := conn.Exec(ctx, "SET synchronous_commit = "+set); err != nil {
		conn.Close(context.Background())
		return nil, false, fmt.Errorf("set synchronous_commit: %w", err)
	}
	return conn, committedDurable, nil
}

// resolveTopic picks the configured topic, else the one the target recorded,
// else <prefix>-pg<major of the source>.
func (s *Service) resolveTopic(ctx context.Context, conn *pgx.Conn) (string, error) {
	if s.cfg.Topic != "" {
		return s.cfg.Topic, nil
	}
	if topic, err := catalog.StoredTopic(ctx, conn, s.cfg.Source); err != nil || topic != "" {
		return topic, err
	}
	topic, err := catalog.TopicOf(ctx, s.cfg.SourceDSN, s.cfg.TopicPrefix)
	if err != nil {
		return "", fmt.Errorf("learn the source's major (or set clusters.%s.topic): %w", s.cfg.Source, err)
	}
	return topic, nil
}

// activeChange is a Failover notification: this consumer became the active
// one (true) or a standby (false).
type activeChange bool

type activeListener chan activeChange

func (l activeListener) BecameActive(pulsar.Consumer, string, int32)   { l.send(true) }
func (l activeListener) BecameInactive(pulsar.Consumer, string, int32) { l.send(false) }

// send never blocks the client's goroutine; only the latest change matters.
func (l activeListener) send(v activeChange) {
	for {
		select {
		case l <- v:
			return
		default:
		}
		select {
		case <-l:
		default:
		}
	}
}
