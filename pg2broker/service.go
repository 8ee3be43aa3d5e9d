package pg2broker

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/internal/retry"
	"github.com/pgtandem/pgtandem/internal/telemetry"
)

// Service is one capture: a source cluster's slot streamed into its topic.
type Service struct {
	cfg     Config
	log     *slog.Logger
	tel     *telemetry.Telemetry
	metrics *metrics
	pub     *publisher

	// state is what /readyz and the logs tell: "streaming" is ready,
	// anything else is not.
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
	backoff := retry.New(s.cfg.RetryMax)
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
		delay := backoff.Next(time.Since(started))
		s.setState("retrying: " + err.Error())
		s.log.Warn("capture interrupted; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			s.setState("stopped")
			return nil
		case <-time.After(delay):
		}
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
