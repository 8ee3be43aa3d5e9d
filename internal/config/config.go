// Package config holds pgtandem's configuration as typed, validated values.
//
// The file, environment and flag handling live in cmd/pgtandem (viper stays
// there); this package defines what a loaded configuration looks like, which
// keys exist, and what makes a configuration valid. Every validation error
// names the key at fault, and no error or log line ever carries a password or
// token: DSNs and secrets are held in types that print themselves redacted.
//
// # Shape
//
//	clusters:            # any names; "old" and "new" by convention
//	  old: { dsn: "postgres://app@db-old:5432/app" }
//	  new: { dsn: "postgres://app@db-new:5432/app", topic: "persistent://public/default/app-new" }
//	pulsar:
//	  url: "pulsar://127.0.0.1:6650"
//	  topic-prefix: "persistent://public/default/app"   # topic of a cluster: <prefix>-pg<major>
//
// docs/configuration.md is the reference of every key.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/pg2broker"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// Config is a whole pgtandem configuration.
type Config struct {
	// Clusters are the PostgreSQL clusters kept in tandem, by name. Commands
	// refer to them with --from and --to.
	Clusters map[string]Cluster `mapstructure:"clusters"`
	Pulsar   Pulsar             `mapstructure:"pulsar"`
	Capture  Capture            `mapstructure:"capture"`
	Broker   Broker             `mapstructure:"broker"`
	Log      Log                `mapstructure:"log"`
	Switch   Switch             `mapstructure:"switch"`
}

// Cluster is one PostgreSQL cluster.
type Cluster struct {
	// DSN is the connection string of the cluster's database, URL or
	// keyword/value form. Required.
	DSN DSN `mapstructure:"dsn"`
	// Topic overrides the cluster's topic, otherwise
	// <pulsar.topic-prefix>-pg<server major>.
	Topic string `mapstructure:"topic"`
	// PgBouncerEntry is where PgBouncer sends clients when the cluster
	// takes the writes, as a connection string of which host, port and
	// dbname count (e.g. "host=10.0.0.7 port=5432 dbname=app"); empty
	// means those of DSN.
	PgBouncerEntry string `mapstructure:"pgbouncer-entry"`
}

// Switch configures `pgtandem switch` (package switchover holds what each
// value does).
type Switch struct {
	// Fence lists how writes on the source are stopped: pgbouncer,
	// database, hook (a list, or one name; in the environment and --set
	// comma separated).
	Fence []string `mapstructure:"fence"`
	// Redirect is how clients are sent to the target: pgbouncer, hook or
	// none.
	Redirect  string          `mapstructure:"redirect"`
	PgBouncer SwitchPgBouncer `mapstructure:"pgbouncer"`
	Hooks     SwitchHooks     `mapstructure:"hooks"`
	// Deadline bounds fence to RESUME; past it the switch undoes itself.
	Deadline time.Duration `mapstructure:"deadline"`
	// PauseTimeout bounds the PAUSE on the PgBouncers.
	PauseTimeout time.Duration `mapstructure:"pause-timeout"`
	// MaxLag is the longest the preflight's marker may take from source
	// to target.
	MaxLag time.Duration `mapstructure:"max-lag"`
	// MaxTransactionAge refuses a switch while an older transaction runs
	// on the source.
	MaxTransactionAge time.Duration `mapstructure:"max-transaction-age"`
	// ProbeTimeout bounds each preflight marker round trip and the wait
	// for the cut row after the RESUME.
	ProbeTimeout time.Duration `mapstructure:"probe-timeout"`
	// CursorPrepare runs pgtandem cursor prepare at each switch, for
	// CursorSubscriptions only when that is not empty.
	CursorPrepare       bool     `mapstructure:"cursor-prepare"`
	CursorSubscriptions []string `mapstructure:"cursor-subscriptions"`
}

// SwitchPgBouncer lists the PgBouncer instances clients go through.
type SwitchPgBouncer struct {
	// Admin is the admin console connection string of every instance.
	Admin []string `mapstructure:"admin"`
	// Database is the [databases] entry clients use.
	Database string `mapstructure:"database"`
	// DatabasesFile is the file pgbouncer.ini %includes in [databases];
	// pgtandem rewrites it.
	DatabasesFile string `mapstructure:"databases-file"`
}

// SwitchHooks are operator commands (sh -c) for the hook strategies.
type SwitchHooks struct {
	Fence    string `mapstructure:"fence"`
	Unfence  string `mapstructure:"unfence"`
	Redirect string `mapstructure:"redirect"`
}

// Pulsar is how pgtandem reaches the Pulsar cluster (or `pgtandem broker
// serve` in development and rehearsals).
type Pulsar struct {
	// URL is the broker service URL, pulsar://host:port or pulsar+ssl://host:port.
	URL string `mapstructure:"url"`
	// TopicPrefix names the per-cluster topics: <prefix>-pg<major>.
	TopicPrefix string `mapstructure:"topic-prefix"`
	// AuthToken is a JWT for token authentication; AuthTokenFile reads it
	// from a file instead (preferred: it keeps the token out of the config).
	AuthToken     Secret `mapstructure:"auth-token"`
	AuthTokenFile string `mapstructure:"auth-token-file"`
	// AdminURL is the broker's HTTP admin API, read for topic backlogs
	// (`pgtandem status`, broker2pg's backlog metric).
	AdminURL string `mapstructure:"admin-url"`
	// TLSTrustCertsFile is a PEM file of the CA certificates that sign the
	// broker's certificate (pulsar+ssl:// and an https:// admin URL); empty
	// trusts the system's roots.
	TLSTrustCertsFile string `mapstructure:"tls-trust-certs-file"`
	// TLSValidateHostname checks that the broker's certificate names the
	// host it was reached at (like PostgreSQL's verify-full); false checks
	// only that a trusted CA signed it (verify-ca), for brokers reached by an
	// address their certificate does not list.
	TLSValidateHostname bool `mapstructure:"tls-validate-hostname"`
	// TLSCertFile and TLSKeyFile are the PEM client certificate and key
	// presented to brokers that require one (mutual TLS); both or neither.
	TLSCertFile string `mapstructure:"tls-cert-file"`
	TLSKeyFile  string `mapstructure:"tls-key-file"`
	// TLSAllowInsecure accepts any broker certificate, trusted or not: the
	// connection is encrypted but not authenticated. Never in production.
	TLSAllowInsecure bool `mapstructure:"tls-allow-insecure"`
}

// UsesTLS reports whether the Pulsar service URL is pulsar+ssl://.
func (p Pulsar) UsesTLS() bool { return strings.HasPrefix(p.URL, "pulsar+ssl://") }

// Capture tunes pgtandem pg2broker.
type Capture struct {
	// FrameMaxChanges and FrameMaxBytes bound one frame (one Pulsar
	// message): a transaction with more changes or bytes is published as
	// fragments. Consumers prefetch many frames, so
	// FrameMaxBytes also bounds their memory (broker2pg prefetches 1000).
	FrameMaxChanges int `mapstructure:"frame-max-changes"`
	FrameMaxBytes   int `mapstructure:"frame-max-bytes"`
	// BatchDelay is how long the producer gathers frames into one Pulsar
	// batch (pg2broker.Config.BatchDelay).
	BatchDelay time.Duration `mapstructure:"batch-delay"`
}

// Broker configures `pgtandem broker serve`, the single-node Pulsar-protocol
// broker for development, CI and local rehearsals.
type Broker struct {
	// Listen is the address of the Pulsar binary protocol.
	Listen string `mapstructure:"listen"`
	// AdminListen is the address of the HTTP admin API; empty disables it.
	AdminListen string `mapstructure:"admin-listen"`
	// DataDir holds the topic logs and subscription cursors.
	DataDir string `mapstructure:"data-dir"`
	// AuthTokenFile, when set, makes clients authenticate with the token it holds.
	AuthTokenFile string `mapstructure:"auth-token-file"`
	// Dedup drops a resent message whose (producer name, sequence id) is
	// already stored; it makes pg2broker's topic exactly-once.
	Dedup bool `mapstructure:"dedup"`
	// MaxMessageSize is the largest message accepted, in bytes; clients split
	// larger ones into chunks when chunking is on.
	MaxMessageSize int `mapstructure:"max-message-size"`
	// RetentionSize and RetentionTime bound what a topic keeps; zero keeps
	// everything, which downstream consumers starting at Earliest rely on.
	RetentionSize int64         `mapstructure:"retention-size"`
	RetentionTime time.Duration `mapstructure:"retention-time"`
}

// Log configures log/slog output.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is auto (text on a terminal, JSON otherwise), text or json.
	Format string `mapstructure:"format"`
}

// Default returns the configuration every loaded file starts from.
func Default() Config {
	sw := switchover.DefaultConfig()
	return Config{
		Pulsar: Pulsar{
			URL:         "pulsar://127.0.0.1:6650",
			TopicPrefix: "persistent://public/default/pgtandem",
			AdminURL:    "http://127.0.0.1:8080",
			// Hostname checks are on unless turned off: a certificate of
			// any host signed by the same CA would pass otherwise.
			TLSValidateHostname: true,
		},
		Capture: Capture{FrameMaxChanges: event.DefaultFrameMaxChanges, FrameMaxBytes: event.DefaultFrameMaxBytes, BatchDelay: pg2broker.DefaultBatchDelay},
		Broker: Broker{
			Listen:         "127.0.0.1:6650",
			DataDir:        "pgtandem-broker-data",
			Dedup:          true,
			MaxMessageSize: 5 << 20,
		},
		Log: Log{Level: "info", Format: "auto"},
		Switch: Switch{
			Fence:               sw.Fence,
			Redirect:            switchover.RedirectPgBouncer,
			Deadline:            sw.Deadline,
			PauseTimeout:        sw.PauseTimeout,
			MaxLag:              sw.MaxLag,
			MaxTransactionAge:   sw.MaxTransactionAge,
			ProbeTimeout:        sw.ProbeTimeout,
			CursorPrepare:       sw.PrepareSubscriptions,
			CursorSubscriptions: []string{},
		},
	}
}

// Error is a configuration error about one key.
type Error struct {
	Key    string
	Reason string
}

func (e *Error) Error() string { return "config: " + e.Key + ": " + e.Reason }

// Validate checks the whole configuration and returns every problem found,
// each an *Error naming its key.
func (c Config) Validate() error {
	var errs []error
	names := make([]string, 0, len(c.Clusters))
	for name := range c.Clusters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cl := c.Clusters[name]
		key := "clusters." + name
		if catalog.ValidateClusterName(name) != nil {
			errs = append(errs, &Error{key, "cluster names are lower-case letters, digits and _, starting with a letter (so that PGTANDEM_CLUSTERS_<NAME>_DSN can address them)"})
		}
		if err := cl.DSN.validate(); err != nil {
			errs = append(errs, &Error{key + ".dsn", err.Error()})
		}
		if cl.PgBouncerEntry != "" {
			if _, err := switchover.EntryFromDSN(cl.PgBouncerEntry); err != nil {
				errs = append(errs, &Error{key + ".pgbouncer-entry", err.Error()})
			}
		}
		if cl.Topic != "" {
			if err := validateTopic(cl.Topic); err != nil {
				errs = append(errs, &Error{key + ".topic", err.Error()})
			}
		}
	}
	if err := validatePulsarURL(c.Pulsar.URL); err != nil {
		errs = append(errs, &Error{"pulsar.url", err.Error()})
	}
	if err := validateTopic(c.Pulsar.TopicPrefix); err != nil {
		errs = append(errs, &Error{"pulsar.topic-prefix", err.Error()})
	}
	if err := validateAdminURL(c.Pulsar.AdminURL); err != nil {
		errs = append(errs, &Error{"pulsar.admin-url", err.Error()})
	}
	if c.Pulsar.AuthToken != "" && c.Pulsar.AuthTokenFile != "" {
		errs = append(errs, &Error{"pulsar.auth-token", "set either pulsar.auth-token or pulsar.auth-token-file, not both"})
	}
	errs = append(errs, c.Pulsar.validateTLS()...)
	if c.Capture.FrameMaxChanges < 1 {
		errs = append(errs, &Error{"capture.frame-max-changes", "must be at least 1"})
	}
	// Well under Pulsar's default 5 MiB message limit; a single change
	// larger than the frame still travels (in chunks).
	if c.Capture.FrameMaxBytes < 1<<10 || c.Capture.FrameMaxBytes > 4<<20 {
		errs = append(errs, &Error{"capture.frame-max-bytes", "must be between 1024 and 4194304 bytes"})
	}
	// Pulsar's client takes a zero delay as its own default (10 ms); past a
	// second the lag would be the delay's.
	if c.Capture.BatchDelay < time.Millisecond || c.Capture.BatchDelay > time.Second {
		errs = append(errs, &Error{"capture.batch-delay", "must be between 1ms and 1s"})
	}
	if err := validateHostPort(c.Broker.Listen); err != nil {
		errs = append(errs, &Error{"broker.listen", err.Error()})
	}
	if c.Broker.AdminListen != "" {
		if err := validateHostPort(c.Broker.AdminListen); err != nil {
			errs = append(errs, &Error{"broker.admin-listen", err.Error()})
		}
	}
	if c.Broker.DataDir == "" {
		errs = append(errs, &Error{"broker.data-dir", "is empty"})
	}
	if c.Broker.MaxMessageSize < 1024 {
		errs = append(errs, &Error{"broker.max-message-size", fmt.Sprintf("%d is below 1024 bytes", c.Broker.MaxMessageSize)})
	}
	if c.Broker.RetentionSize < 0 {
		errs = append(errs, &Error{"broker.retention-size", "is negative"})
	}
	if c.Broker.RetentionTime < 0 {
		errs = append(errs, &Error{"broker.retention-time", "is negative"})
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, &Error{"log.level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.Log.Level)})
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		errs = append(errs, &Error{"log.format", fmt.Sprintf("%q is not one of auto, text, json", c.Log.Format)})
	}
	return errors.Join(errs...)
}

// Cluster returns the named cluster, or an error naming the key to add.
func (c Config) Cluster(name string) (Cluster, error) {
	if name == "" {
		return Cluster{}, errors.New("config: no cluster named: pass --from/--to with one of " + c.clusterList())
	}
	cl, ok := c.Clusters[name]
	if !ok {
		return Cluster{}, &Error{"clusters." + name + ".dsn", "is missing: cluster " + strconv.Quote(name) + " is not configured (configured: " + c.clusterList() + ")"}
	}
	return cl, nil
}

func (c Config) clusterList() string {
	if len(c.Clusters) == 0 {
		return "none"
	}
	names := make([]string, 0, len(c.Clusters))
	for name := range c.Clusters {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// TopicFor returns the topic of a cluster whose server runs the given major:
// the cluster's own topic when set, else <pulsar.topic-prefix>-pg<major>.
func (c Config) TopicFor(name string, major int) (string, error) {
	cl, err := c.Cluster(name)
	if err != nil {
		return "", err
	}
	if cl.Topic != "" {
		return cl.Topic, nil
	}
	return catalog.Topic(c.Pulsar.TopicPrefix, major), nil
}

func validatePulsarURL(raw string) error {
	if raw == "" {
		return errors.New("is empty; want pulsar://host:port")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL; want pulsar://host:port", raw)
	}
	if u.Scheme != "pulsar" && u.Scheme != "pulsar+ssl" {
		return fmt.Errorf("%q: scheme must be pulsar:// or pulsar+ssl://", u.Redacted())
	}
	if u.User != nil {
		return errors.New("must not carry credentials; use pulsar.auth-token-file")
	}
	// Pulsar accepts a comma-separated host list in one URL.
	for _, hp := range strings.Split(u.Host, ",") {
		if err := validateHostPort(hp); err != nil {
			return fmt.Errorf("%q: %v", u.Redacted(), err)
		}
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("%q: unexpected path %q", u.Redacted(), u.Path)
	}
	return nil
}

// validateTLS checks the pulsar.tls-* keys against each other and the URL.
// Whether the files exist and hold PEM is checked when a client is made
// (internal/pulsarclient), so that a configuration can be checked away from
// the machine that holds the files.
func (p Pulsar) validateTLS() []error {
	var errs []error
	if (p.TLSCertFile == "") != (p.TLSKeyFile == "") {
		key, other := "pulsar.tls-cert-file", "pulsar.tls-key-file"
		if p.TLSCertFile == "" {
			key, other = other, key
		}
		errs = append(errs, &Error{key, "is set without " + other + ": a client certificate needs both"})
	}
	if p.TLSAllowInsecure && p.TLSTrustCertsFile != "" {
		errs = append(errs, &Error{"pulsar.tls-allow-insecure", "accepts any certificate, so pulsar.tls-trust-certs-file would be ignored: remove one of them"})
	}
	if p.UsesTLS() || p.URL == "" {
		return errs
	}
	// A TLS key on a plain URL is a setting the operator believes in and
	// does not have, like an unknown key.
	for _, k := range []struct {
		key string
		set bool
	}{
		{"pulsar.tls-trust-certs-file", p.TLSTrustCertsFile != ""},
		{"pulsar.tls-cert-file", p.TLSCertFile != ""},
		{"pulsar.tls-key-file", p.TLSKeyFile != ""},
		{"pulsar.tls-allow-insecure", p.TLSAllowInsecure},
	} {
		if k.set {
			errs = append(errs, &Error{k.key, "applies only to a pulsar+ssl:// URL, and pulsar.url is " + redactedURL(p.URL) + ": use pulsar+ssl:// (port 6651 by default) or remove the key"})
		}
	}
	return errs
}

func redactedURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "not a URL"
}

func validateAdminURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", raw)
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	return nil
}

func validateHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%q is not host:port", hp)
	}
	if host == "" && hp[0] != ':' {
		return fmt.Errorf("%q has no host", hp)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", hp, port)
	}
	return nil
}

var topicName = regexp.MustCompile(`^(persistent|non-persistent)://[A-Za-z0-9_.=:-]+/[A-Za-z0-9_.=:-]+/[A-Za-z0-9_.=:-]+$`)

func validateTopic(topic string) error {
	if !topicName.MatchString(topic) {
		return fmt.Errorf("%q is not a full topic name persistent://tenant/namespace/name", topic)
	}
	return nil
}

// pgconn's own parse errors redact the password; this is a second guard,
// since an error that leaks a password is worse than a terse one.
func parseDSN(raw string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(raw)
	if err != nil {
		msg := err.Error()
		for _, pw := range passwordsIn(raw) {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
		return nil, errors.New(msg)
	}
	return cfg, nil
}

var keywordPassword = regexp.MustCompile(`(?i)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// passwordsIn finds every password-like value in a DSN of either form, also
// a malformed one, longest first so that replacing them leaves no fragment.
func passwordsIn(raw string) []string {
	var pws []string
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			pws = append(pws, pw, url.QueryEscape(pw), url.PathEscape(pw))
		}
	} else if at := strings.LastIndex(raw, "@"); strings.Contains(raw, "://") && at > 0 {
		userinfo := raw[strings.Index(raw, "://")+3 : at]
		if _, pw, ok := strings.Cut(userinfo, ":"); ok && pw != "" {
			pws = append(pws, pw)
		}
	}
	for _, m := range keywordPassword.FindAllStringSubmatch(raw, -1) {
		pws = append(pws, strings.Trim(m[1], "'"), m[1])
	}
	if u, err := url.Parse(raw); err == nil {
		if pw := u.Query().Get("password"); pw != "" {
			pws = append(pws, pw, url.QueryEscape(pw))
		}
	}
	sort.Slice(pws, func(i, j int) bool { return len(pws[i]) > len(pws[j]) })
	return pws
}
