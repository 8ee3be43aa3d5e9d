package pg2broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// Config is what one capture service needs. Build it with the values of
// internal/config and check it with Validate.
type Config struct {
	// Cluster is the source cluster's name in the configuration; the slot
	// (pgtandem_<cluster>) and the producer are named after it.
	Cluster string
	// DSN connects to the source database (a replication connection is
	// derived from it).
	DSN string
	// Topic is the full topic name, or empty to derive it as
	// TopicPrefix-pg<major> once the server's major is known.
	Topic       string
	TopicPrefix string
	// PulsarURL and PulsarToken reach the broker.
	PulsarURL   string
	PulsarToken string
	// PulsarTLS checks the broker's certificate on a pulsar+ssl:// URL.
	PulsarTLS pulsarclient.TLS
	// CreateSlot creates the publication and slot when missing, for users
	// who synchronise the target some other way than `pgtandem init`.
	CreateSlot bool
	// MaxInFlight bounds the messages sent but not yet acknowledged by the
	// broker; when it is reached, reading from the slot pauses.
	MaxInFlight int
	// FrameMaxChanges and FrameMaxBytes bound one frame (message): a
	// transaction with more changes or bytes is published as fragments.
	FrameMaxChanges int
	FrameMaxBytes   int
	// LargeMessage is the payload size above which a frame (one change
	// larger than FrameMaxBytes) is published in chunks; keep it below the
	// broker's maxMessageSize (Pulsar's default is 5 MiB).
	LargeMessage int
	// BatchDelay is how long the producer gathers frames into one Pulsar
	// batch before it sends them; a frame of a transaction that wrote an
	// in-band row (a switch marker, a cursor row, see catalog.IsInBand)
	// goes at once with the batch that holds it. A longer delay puts more
	// transactions in one broker write and one delivery, and so lets
	// broker2pg commit more of them at a time, for up to that much more
	// latency. Positive.
	BatchDelay time.Duration
	// StatusInterval is how often the confirmed position is reported to
	// PostgreSQL.
	StatusInterval time.Duration
	// RetryMax caps the backoff between attempts after a transient failure.
	RetryMax time.Duration
	// StopTimeout bounds how long the service, once its context ends, still
	// waits for the broker to acknowledge what it sent (everything
	// acknowledged by then is confirmed to PostgreSQL, the rest is read
	// again at the next start). It bounds every such wait: the final
	// flush, and a flush or send the service was in when it was asked to
	// stop, as when the broker is unreachable. Positive; keep it under the
	// time the process is given to stop (Kubernetes'
	// terminationGracePeriodSeconds).
	StopTimeout time.Duration
}

// DefaultBatchDelay is Config.BatchDelay's default. At the 2 ms it was
// before, a source at 500 transactions per second sent batches of one or
// two: each cost its own broker write and fsync, delivery and target
// commit. In BenchmarkSwitchPause, where both directions' services share
// two cores with the databases and the clients, 10 ms took the services'
// CPU during the switches from 0.41 to 0.35 core.
const DefaultBatchDelay = 10 * time.Millisecond

// DefaultConfig returns the tuning defaults; identity fields are left empty.
func DefaultConfig() Config {
	return Config{
		MaxInFlight:     20000,
		FrameMaxChanges: event.DefaultFrameMaxChanges,
		FrameMaxBytes:   event.DefaultFrameMaxBytes,
		LargeMessage:    4 << 20,
		BatchDelay:      DefaultBatchDelay,
		StatusInterval:  time.Second,
		RetryMax:        30 * time.Second,
		StopTimeout:     30 * time.Second,
	}
}

// Validate checks the configuration without connecting anywhere.
func (c Config) Validate() error {
	var errs []error
	if err := catalog.ValidateClusterName(c.Cluster); err != nil {
		errs = append(errs, fmt.Errorf("pg2broker: %w", err))
	}
	if c.DSN == "" {
		errs = append(errs, errors.New("pg2broker: DSN is empty"))
	}
	if c.Topic == "" && c.TopicPrefix == "" {
		errs = append(errs, errors.New("pg2broker: neither a topic nor a topic prefix is set"))
	}
	if c.PulsarURL == "" {
		errs = append(errs, errors.New("pg2broker: Pulsar URL is empty"))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("pg2broker: MaxInFlight %d must be positive", c.MaxInFlight))
	}
	if c.BatchDelay <= 0 {
		errs = append(errs, fmt.Errorf("pg2broker: BatchDelay %s must be positive", c.BatchDelay))
	}
	if c.FrameMaxChanges < 1 {
		errs = append(errs, fmt.Errorf("pg2broker: FrameMaxChanges %d must be positive", c.FrameMaxChanges))
	}
	if c.FrameMaxBytes < 1024 || c.FrameMaxBytes > c.LargeMessage {
		errs = append(errs, fmt.Errorf("pg2broker: FrameMaxBytes %d must be between 1 KiB and LargeMessage (%d)", c.FrameMaxBytes, c.LargeMessage))
	}
	if c.LargeMessage < 1024 {
		errs = append(errs, fmt.Errorf("pg2broker: LargeMessage %d is below 1 KiB", c.LargeMessage))
	}
	if c.StatusInterval <= 0 || c.RetryMax <= 0 || c.StopTimeout <= 0 {
		errs = append(errs, errors.New("pg2broker: StatusInterval, RetryMax and StopTimeout must be positive"))
	}
	return errors.Join(errs...)
}
