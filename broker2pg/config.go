package broker2pg

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// Config is what one apply service needs. Build it with the values of
// internal/config and check it with Validate.
type Config struct {
	// Source and Target are the cluster names of the direction. The
	// replication origin (pgtandem_<Source>) and the progress row are named
	// after the source, the subscription after the target.
	Source string
	Target string
	// TargetDSN connects to the database changes are applied to.
	TargetDSN string
	// Topic is the source's topic. When empty, the topic recorded in
	// pgtandem.apply_progress is used, else TopicPrefix-pg<major> with the
	// major read from SourceDSN.
	Topic       string
	TopicPrefix string
	SourceDSN   string
	// PulsarURL and PulsarToken reach the broker.
	PulsarURL   string
	PulsarToken string
	// PulsarTLS checks the broker's certificate on a pulsar+ssl:// URL.
	PulsarTLS pulsarclient.TLS
	// AdminURL is the broker's admin API, polled for the subscription's
	// backlog; empty leaves the backlog metric out.
	AdminURL string
	// StartAfterLSN is where a target cloned from a physical copy of the
	// source starts: transactions committed at or before it are already in
	// the clone. It is recorded in apply_progress on first use and ignored
	// once a position is stored.
	StartAfterLSN pglogrepl.LSN
	// GroupRows, GroupBytes and GroupDelay bound how many source
	// transactions one target transaction takes while a backlog lasts: the
	// target transaction commits at the first source COMMIT past any bound,
	// or when no message is waiting.
	GroupRows  int
	GroupBytes int
	GroupDelay time.Duration
	// FlushRows bounds the row changes held in memory before they are sent
	// to the target, also inside one large source transaction.
	FlushRows int
	// ReceiverQueue is the consumer's prefetch, in messages (frames): at
	// most ReceiverQueue × the capture's frame-max-bytes of memory.
	ReceiverQueue int
	// BlockedRetry is how often a blocked apply (missing table, bad value,
	// undecodable message) tries again.
	BlockedRetry time.Duration
	// RetryMax caps the backoff after a transient failure.
	RetryMax time.Duration
}

// DefaultConfig returns the tuning defaults; identity fields are left empty.
func DefaultConfig() Config {
	return Config{
		GroupRows:     50000,
		GroupBytes:    64 << 20,
		GroupDelay:    time.Second,
		FlushRows:     5000,
		ReceiverQueue: 1000,
		BlockedRetry:  10 * time.Second,
		RetryMax:      30 * time.Second,
	}
}

// Validate checks the configuration without connecting anywhere.
func (c Config) Validate() error {
	var errs []error
	for _, n := range []struct{ what, name string }{{"source", c.Source}, {"target", c.Target}} {
		if err := catalog.ValidateClusterName(n.name); err != nil {
			errs = append(errs, fmt.Errorf("broker2pg: %s %w", n.what, err))
		}
	}
	if c.Source == c.Target {
		errs = append(errs, fmt.Errorf("broker2pg: source and target are both %q", c.Source))
	}
	if c.TargetDSN == "" {
		errs = append(errs, errors.New("broker2pg: target DSN is empty"))
	}
	if c.Topic == "" && (c.TopicPrefix == "" || c.SourceDSN == "") {
		errs = append(errs, errors.New("broker2pg: no topic, and no topic prefix with a source DSN to derive it from"))
	}
	if c.PulsarURL == "" {
		errs = append(errs, errors.New("broker2pg: Pulsar URL is empty"))
	}
	if c.GroupRows < 1 || c.GroupBytes < 1 || c.FlushRows < 1 || c.ReceiverQueue < 1 {
		errs = append(errs, errors.New("broker2pg: GroupRows, GroupBytes, FlushRows and ReceiverQueue must be positive"))
	}
	if c.GroupDelay <= 0 || c.BlockedRetry <= 0 || c.RetryMax <= 0 {
		errs = append(errs, errors.New("broker2pg: GroupDelay, BlockedRetry and RetryMax must be positive"))
	}
	return errors.Join(errs...)
}
