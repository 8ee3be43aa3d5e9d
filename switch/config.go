package switchover

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Fence strategies: how writes on the source are stopped for the window.
const (
	// FencePgBouncer pauses the database on every PgBouncer listed: clients
	// going through the pooler wait, none gets an error. It cannot stop a
	// client that connects to PostgreSQL directly.
	FencePgBouncer = "pgbouncer"
	// FenceDatabase makes the source database read-only for every new
	// session (ALTER DATABASE ... SET default_transaction_read_only = on)
	// and terminates the sessions that are not pgtandem's: clients that
	// bypass the pooler can read but not write. A client that sets
	// default_transaction_read_only = off itself is not stopped.
	FenceDatabase = "database"
	// FenceHook runs the operator's command (Hooks.Fence, then Hooks.Unfence
	// to undo), e.g. a firewall rule in front of the source primary.
	FenceHook = "hook"
)

// Redirect strategies: how clients are sent to the target.
const (
	// RedirectPgBouncer rewrites the databases file every PgBouncer
	// %includes and reloads it, then resumes the paused database.
	RedirectPgBouncer = "pgbouncer"
	// RedirectHook runs Hooks.Redirect (DNS, a Kubernetes Service...).
	RedirectHook = "hook"
	// RedirectNone only prints where clients must go now.
	RedirectNone = "none"
)

// Cluster is one side of a switch.
type Cluster struct {
	// Name is the cluster's name in the configuration (clusters.<name>).
	Name string
	// DSN reaches the cluster's database as a user that sees every session
	// (pg_read_all_stats), may terminate them (pg_signal_backend), ALTER
	// DATABASE (its owner) and read and setval every sequence: a superuser,
	// or a role with all of these. The preflight checks it.
	DSN string
	// Entry is where PgBouncer sends clients when this cluster takes the
	// writes; zero means the host, port and dbname of DSN.
	Entry DatabaseEntry
	// Topic is the cluster's topic, where its capture publishes: the
	// switch records its cut there (package cursor).
	Topic string
}

// PgBouncerConfig lists the PgBouncer instances in front of the clusters.
type PgBouncerConfig struct {
	// Admin holds the admin console connection string of every instance,
	// e.g. postgres://pgbouncer@10.0.0.9:6432/pgbouncer.
	Admin []string
	// Database is the [databases] entry clients use.
	Database string
	// DatabasesFile is the file pgbouncer.ini %includes inside [databases];
	// pgtandem rewrites it with the one entry of Database. Instances on one
	// host share it.
	DatabasesFile string
}

// Hooks are operator commands, run with sh -c. Each gets PGTANDEM_SWITCH_ID,
// PGTANDEM_SWITCH_FROM and PGTANDEM_SWITCH_TO (cluster names),
// PGTANDEM_SWITCH_ACTION (fence, unfence or redirect),
// PGTANDEM_SWITCH_CLUSTER (the cluster acted on) and PGTANDEM_SWITCH_HOST,
// _PORT and _DBNAME (its entry) in the environment, and must be idempotent:
// a resumed or undone switch may run it again. A non-zero exit is a failure.
type Hooks struct {
	Fence    string
	Unfence  string
	Redirect string
}

// Config is one switch: clients move from From to To.
type Config struct {
	From, To Cluster
	// Fence lists the fence strategies (FencePgBouncer, FenceDatabase,
	// FenceHook), at least one.
	Fence []string
	// Redirect is RedirectPgBouncer, RedirectHook or RedirectNone.
	Redirect  string
	PgBouncer PgBouncerConfig
	Hooks     Hooks
	// Deadline bounds the write pause, from the fence to the RESUME: when
	// it expires before the point of no return the switch undoes itself.
	Deadline time.Duration
	// PauseTimeout bounds the PAUSE on the PgBouncers (and the wait for
	// running transactions it implies).
	PauseTimeout time.Duration
	// MaxLag is the longest a marker written on From may take to be applied
	// on To in the preflight.
	MaxLag time.Duration
	// MaxTransactionAge refuses a switch while a transaction on From is
	// older: it would hold the fence.
	MaxTransactionAge time.Duration
	// ProbeTimeout bounds each preflight marker round trip, and the wait
	// for the cut row in To's topic after the RESUME.
	ProbeTimeout time.Duration
	// PrepareSubscriptions runs `pgtandem cursor prepare` once the cut is
	// found: every durable subscription of From's topic (only those of
	// CursorSubscriptions, when it is not empty) gets one of the same name
	// on To's topic, at the cut (Options.Admin needed).
	PrepareSubscriptions bool
	CursorSubscriptions  []string
}

// DefaultConfig returns the defaults of every duration and strategy.
func DefaultConfig() Config {
	return Config{
		Fence:             []string{FencePgBouncer, FenceDatabase},
		Redirect:          RedirectPgBouncer,
		Deadline:          10 * time.Second,
		PauseTimeout:      2 * time.Second,
		MaxLag:            time.Second,
		MaxTransactionAge: 5 * time.Second,
		ProbeTimeout:      30 * time.Second,
	}
}

// ConfigError names a configuration value that cannot work.
type ConfigError struct {
	Key, Reason string
}

func (e *ConfigError) Error() string { return "switch." + e.Key + ": " + e.Reason }

func (c Config) has(fence string) bool { return slices.Contains(c.Fence, fence) }

func (c Config) usesPgBouncer() bool { return c.has(FencePgBouncer) || c.Redirect == RedirectPgBouncer }

// Validate checks the configuration and fills each cluster's Entry from its
// DSN when it is empty. Errors are *ConfigError.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	if c.From.Name == "" || c.To.Name == "" || c.From.Name == c.To.Name {
		bad("from/to", "a switch needs two different clusters, got %q and %q", c.From.Name, c.To.Name)
	}
	if len(c.Fence) == 0 {
		bad("fence", "at least one of pgbouncer, database, hook: without a fence clients could commit on both clusters")
	}
	for i, f := range c.Fence {
		f = strings.TrimSpace(f) // "pgbouncer, database" from the environment
		c.Fence[i] = f
		if f != FencePgBouncer && f != FenceDatabase && f != FenceHook {
			bad("fence", "unknown strategy %q (pgbouncer, database or hook)", f)
		}
	}
	switch c.Redirect {
	case RedirectPgBouncer, RedirectHook, RedirectNone:
	default:
		bad("redirect", "unknown strategy %q (pgbouncer, hook or none)", c.Redirect)
	}
	if c.has(FenceHook) && (c.Hooks.Fence == "" || c.Hooks.Unfence == "") {
		bad("hooks", "fence hook needs both hooks.fence and hooks.unfence (the unfence undoes an aborted switch)")
	}
	if c.Redirect == RedirectHook && c.Hooks.Redirect == "" {
		bad("hooks.redirect", "redirect hook needs the command")
	}
	if c.usesPgBouncer() {
		if len(c.PgBouncer.Admin) == 0 {
			bad("pgbouncer.admin", "list the admin console of every PgBouncer instance")
		}
		for _, dsn := range c.PgBouncer.Admin {
			if _, err := NewPgBouncer(dsn); err != nil {
				bad("pgbouncer.admin", "%v", err)
			}
		}
		if c.PgBouncer.Database == "" {
			bad("pgbouncer.database", "name the [databases] entry clients use")
		}
	}
	if c.Redirect == RedirectPgBouncer && c.PgBouncer.DatabasesFile == "" {
		bad("pgbouncer.databases-file", "name the file pgbouncer.ini %%includes in [databases]; pgtandem rewrites it")
	}
	if c.Redirect != RedirectPgBouncer && c.has(FencePgBouncer) && !c.has(FenceDatabase) && !c.has(FenceHook) {
		bad("fence", "with redirect %s, PgBouncer still sends clients to the source after RESUME: add the database fence (or a hook fence) so that the source stays read-only", c.Redirect)
	}
	if c.Redirect == RedirectPgBouncer && !c.has(FencePgBouncer) && !c.has(FenceDatabase) {
		bad("fence", "redirecting through PgBouncer needs the pgbouncer or database fence: otherwise a client could commit on the source while others already commit on the target")
	}
	for key, d := range map[string]time.Duration{"deadline": c.Deadline, "pause-timeout": c.PauseTimeout, "max-lag": c.MaxLag,
		"max-transaction-age": c.MaxTransactionAge, "probe-timeout": c.ProbeTimeout} {
		if d <= 0 {
			bad(key, "must be positive, got %s", d)
		}
	}
	if c.PauseTimeout >= c.Deadline && c.Deadline > 0 {
		bad("pause-timeout", "%s must be shorter than the deadline %s", c.PauseTimeout, c.Deadline)
	}
	for _, side := range []*Cluster{&c.From, &c.To} {
		if side.Topic == "" {
			bad("clusters."+side.Name+".topic", "empty: the switch records its cut in each cluster's topic")
		}
		if side.DSN == "" {
			bad("clusters."+side.Name+".dsn", "empty")
			continue
		}
		if side.Entry == (DatabaseEntry{}) {
			entry, err := EntryFromDSN(side.DSN)
			if err != nil {
				bad("clusters."+side.Name+".dsn", "%v", err)
				continue
			}
			side.Entry = entry
		}
		if c.Redirect == RedirectPgBouncer && c.PgBouncer.Database != "" {
			if err := side.Entry.validate(c.PgBouncer.Database); err != nil {
				bad("pgbouncer", "%v", err)
			}
		}
	}
	return errors.Join(errs...)
}

// EntryFromDSN is the PgBouncer entry of a cluster reached by dsn: its first
// host, port and dbname.
func EntryFromDSN(dsn string) (DatabaseEntry, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return DatabaseEntry{}, fmt.Errorf("parse: %w", err)
	}
	db := cfg.Database
	if db == "" {
		db = cfg.User // what PostgreSQL connects to without a dbname
	}
	return DatabaseEntry{Host: cfg.Host, Port: int(cfg.Port), DBName: db}, nil
}

func (e DatabaseEntry) String() string {
	return e.Host + ":" + strconv.Itoa(e.Port) + "/" + e.DBName
}
