package devbroker

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is everything the broker needs to run. Start from [DefaultConfig].
type Config struct {
	// Listen is the host:port of the Pulsar binary protocol listener, the
	// address in clients' pulsar:// service URL. Port 0 picks a free port.
	Listen string
	// AdminListen is the host:port of the HTTP admin API (a subset of
	// Pulsar's /admin/v2 REST API). Empty turns the admin API off.
	AdminListen string
	// DataDir holds the topic logs and subscription cursors. It is created
	// if missing and locked against a second broker.
	DataDir string
	// AuthTokenFile names a file whose content (surrounding whitespace
	// trimmed) is the one token clients must present with Pulsar's token
	// authentication, on the binary protocol and as "Authorization: Bearer"
	// on the admin API. Empty turns authentication off.
	AuthTokenFile string
	// Dedup drops a message whose (producer name, sequence id) is not above
	// the last one stored for that producer name, answering it with a
	// receipt as if stored. On by default.
	Dedup bool
	// MaxMessageSize is the largest message (metadata plus payload) a
	// producer may send, announced to clients at connect time; clients split
	// larger messages into chunks when chunking is enabled. Default 5 MiB.
	MaxMessageSize int
	// RetentionSize is the size in bytes past which a topic's oldest data
	// that every durable subscription has acknowledged is deleted, a whole
	// segment at a time. 0 keeps everything.
	RetentionSize int64
	// RetentionTime is the age past which a topic's oldest data that every
	// durable subscription has acknowledged is deleted, a whole segment at a
	// time. 0 keeps everything.
	RetentionTime time.Duration
	// SegmentSize is the size of the files a topic log is cut into, and so
	// the granularity of retention. 0 means 64 MiB.
	SegmentSize int64
	// RetentionInterval is how often RetentionSize and RetentionTime are
	// enforced. 0 means once a minute; tests set it short to see retention
	// act at once.
	RetentionInterval time.Duration
	// TLSCertFile and TLSKeyFile, both PEM, make the binary protocol
	// listener speak TLS (clients use pulsar+ssl://), so that tests can
	// drive the Pulsar client's TLS options end to end. The admin API stays
	// plain HTTP. Empty: no TLS.
	TLSCertFile string
	TLSKeyFile  string
	// TLSClientCAFile, with TLS on, requires every client to present a
	// certificate signed by a CA of this PEM file (mutual TLS).
	TLSClientCAFile string
}

// DefaultConfig returns the configuration of a local development broker.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:6650",
		DataDir:        "pgtandem-broker-data",
		Dedup:          true,
		MaxMessageSize: 5 << 20,
	}
}

// ConfigError names the field of a [Config] that is wrong and why.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("broker config: %s: %s", e.Field, e.Reason)
}

// IsConfigError reports whether err is, or wraps, a [ConfigError].
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// Validate checks c without touching the network or the disk.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return &ConfigError{Field: "Listen", Reason: fmt.Sprintf("want host:port, got %q", c.Listen)}
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			return &ConfigError{Field: "AdminListen", Reason: fmt.Sprintf("want host:port or empty, got %q", c.AdminListen)}
		}
	}
	if c.DataDir == "" {
		return &ConfigError{Field: "DataDir", Reason: "must name a directory"}
	}
	if c.MaxMessageSize < 1024 || c.MaxMessageSize > 1<<30 {
		return &ConfigError{Field: "MaxMessageSize", Reason: fmt.Sprintf("%d is outside [1 KiB, 1 GiB]", c.MaxMessageSize)}
	}
	if c.RetentionSize < 0 {
		return &ConfigError{Field: "RetentionSize", Reason: "must not be negative (0 keeps everything)"}
	}
	if c.RetentionTime < 0 {
		return &ConfigError{Field: "RetentionTime", Reason: "must not be negative (0 keeps everything)"}
	}
	if c.RetentionInterval < 0 {
		return &ConfigError{Field: "RetentionInterval", Reason: "must not be negative (0 means one minute)"}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return &ConfigError{Field: "TLSCertFile", Reason: "TLSCertFile and TLSKeyFile go together"}
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		return &ConfigError{Field: "TLSClientCAFile", Reason: "needs TLSCertFile and TLSKeyFile: client certificates are checked only on a TLS listener"}
	}
	if c.SegmentSize < 0 {
		return &ConfigError{Field: "SegmentSize", Reason: "must not be negative (0 means 64 MiB)"}
	}
	return nil
}
