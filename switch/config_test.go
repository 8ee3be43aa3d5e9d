package switchover_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	switchover "github.com/pgtandem/pgtandem/switch"
)

// clearPGEnv keeps libpq's environment variables out of DSN parsing, so a
// default port or host is pgconn's and not the machine's.
func clearPGEnv(t *testing.T) {
	t.Helper()
	for _, name := range []string{"PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE", "PGSERVICEFILE"} {
		t.Setenv(name, "")
	}
}

// validConfig is a switch through one PgBouncer that Validate accepts; each
// case of TestValidateRefuses breaks one thing in it.
func validConfig() switchover.Config {
	c := switchover.DefaultConfig()
	c.From = switchover.Cluster{Name: "old", DSN: "postgres://app@10.0.0.7:5432/app", Topic: "app-pg15"}
	c.To = switchover.Cluster{Name: "new", DSN: "host=10.0.0.8 port=5433 dbname=app user=app", Topic: "app-pg17"}
	c.PgBouncer = switchover.PgBouncerConfig{
		Admin:         []string{"postgres://pgbouncer@10.0.0.9:6432/pgbouncer"},
		Database:      "app",
		DatabasesFile: "/etc/pgbouncer/pgtandem.ini",
	}
	return c
}

// configErrors returns every error Validate joined, failing the test on one
// that is not a *ConfigError.
func configErrors(t *testing.T, err error) []*switchover.ConfigError {
	t.Helper()
	var errs []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	} else if err != nil {
		errs = []error{err}
	}
	var out []*switchover.ConfigError
	for _, e := range errs {
		var ce *switchover.ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("%v (%T) is not a *switchover.ConfigError", e, e)
		}
		out = append(out, ce)
	}
	return out
}

func TestValidateAccepts(t *testing.T) {
	clearPGEnv(t)
	for _, tc := range []struct {
		name   string
		change func(*switchover.Config)
	}{
		{"defaults: pgbouncer and database fences, pgbouncer redirect", func(*switchover.Config) {}},
		{"every fence", func(c *switchover.Config) {
			c.Fence = []string{switchover.FencePgBouncer, switchover.FenceDatabase, switchover.FenceHook}
			c.Hooks = switchover.Hooks{Fence: "fw-close", Unfence: "fw-open"}
		}},
		{"database fence with pgbouncer redirect", func(c *switchover.Config) {
			c.Fence = []string{switchover.FenceDatabase}
		}},
		{"hooks only, no PgBouncer", func(c *switchover.Config) {
			c.Fence, c.Redirect = []string{switchover.FenceHook}, switchover.RedirectHook
			c.Hooks = switchover.Hooks{Fence: "fw-close", Unfence: "fw-open", Redirect: "kubectl patch svc"}
			c.PgBouncer = switchover.PgBouncerConfig{}
		}},
		{"database fence, redirect none, no PgBouncer", func(c *switchover.Config) {
			c.Fence, c.Redirect = []string{switchover.FenceDatabase}, switchover.RedirectNone
			c.PgBouncer = switchover.PgBouncerConfig{}
		}},
		{"pgbouncer fence with hook redirect needs no databases file", func(c *switchover.Config) {
			c.Redirect, c.Hooks.Redirect = switchover.RedirectHook, "update-dns"
			c.PgBouncer.DatabasesFile = ""
		}},
		{"pgbouncer and hook fences, no redirect", func(c *switchover.Config) {
			c.Fence, c.Redirect = []string{switchover.FencePgBouncer, switchover.FenceHook}, switchover.RedirectNone
			c.Hooks = switchover.Hooks{Fence: "fw-close", Unfence: "fw-open"}
		}},
		{"pgbouncer fence alone, pgbouncer redirect", func(c *switchover.Config) { c.Fence = []string{switchover.FencePgBouncer} }},
		{"several PgBouncers", func(c *switchover.Config) {
			c.PgBouncer.Admin = append(c.PgBouncer.Admin, "host=10.0.0.10 port=6432 dbname=pgbouncer user=pgbouncer")
		}},
		{"database name with dot and dash", func(c *switchover.Config) { c.PgBouncer.Database = "app-v2.main" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			if err := c.Validate(); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

func TestValidateRefuses(t *testing.T) {
	clearPGEnv(t)
	for _, tc := range []struct {
		name   string
		change func(*switchover.Config)
		// key must be among the errors' keys, with reason in its reason.
		key, reason string
	}{
		{"unknown fence", func(c *switchover.Config) { c.Fence = []string{"pgbouncer", "firewall"} }, "fence", `"firewall"`},
		{"no fence", func(c *switchover.Config) { c.Fence = nil }, "fence", "at least one"},
		{"unknown redirect", func(c *switchover.Config) { c.Redirect = "dns" }, "redirect", `"dns"`},
		{"empty redirect", func(c *switchover.Config) { c.Redirect = "" }, "redirect", "unknown strategy"},
		{"fence hook without unfence", func(c *switchover.Config) {
			c.Fence, c.Hooks.Fence = []string{"pgbouncer", "hook"}, "fw-close"
		}, "hooks", "hooks.unfence"},
		{"fence hook without fence command", func(c *switchover.Config) {
			c.Fence, c.Hooks.Unfence = []string{"pgbouncer", "hook"}, "fw-open"
		}, "hooks", "hooks.fence"},
		{"redirect hook without command", func(c *switchover.Config) { c.Redirect = "hook" }, "hooks.redirect", "command"},
		{"pgbouncer fence without admin", func(c *switchover.Config) {
			c.Redirect, c.Hooks.Redirect = "hook", "update-dns"
			c.PgBouncer.Admin = nil
		}, "pgbouncer.admin", "admin console"},
		{"pgbouncer redirect without admin", func(c *switchover.Config) {
			c.Fence, c.PgBouncer.Admin = []string{"database"}, nil
		}, "pgbouncer.admin", "admin console"},
		{"pgbouncer without database", func(c *switchover.Config) {
			c.Redirect, c.Hooks.Redirect = "hook", "update-dns"
			c.PgBouncer.Database = ""
		}, "pgbouncer.database", "[databases] entry"},
		{"pgbouncer redirect without databases file", func(c *switchover.Config) { c.PgBouncer.DatabasesFile = "" }, "pgbouncer.databases-file", "%include"},
		{"pgbouncer fence alone, hook redirect", func(c *switchover.Config) {
			c.Fence, c.Redirect, c.Hooks.Redirect = []string{"pgbouncer"}, "hook", "update-dns"
		}, "fence", "PgBouncer still sends clients to the source"},
		{"pgbouncer fence alone, no redirect", func(c *switchover.Config) {
			c.Fence, c.Redirect = []string{"pgbouncer"}, "none"
		}, "fence", "PgBouncer still sends clients to the source"},
		{"pgbouncer redirect behind the hook fence only", func(c *switchover.Config) {
			c.Fence, c.Hooks = []string{"hook"}, switchover.Hooks{Fence: "fw-close", Unfence: "fw-open"}
		}, "fence", "redirecting through PgBouncer"},
		{"unparsable admin DSN", func(c *switchover.Config) {
			c.PgBouncer.Admin = append(c.PgBouncer.Admin, "postgres://pgbouncer@10.0.0.10:port/pgbouncer")
		}, "pgbouncer.admin", "PgBouncer admin connection string"},
		{"admin DSN not on the console", func(c *switchover.Config) {
			c.PgBouncer.Admin = []string{"postgres://pgbouncer@10.0.0.9:6432/app"}
		}, "pgbouncer.admin", `database "app"`},
		{"same cluster twice", func(c *switchover.Config) { c.To.Name = "old" }, "from/to", "two different clusters"},
		{"no source name", func(c *switchover.Config) { c.From.Name = "" }, "from/to", "two different clusters"},
		{"pause timeout equal to the deadline", func(c *switchover.Config) { c.PauseTimeout = c.Deadline }, "pause-timeout", "shorter than the deadline"},
		{"pause timeout past the deadline", func(c *switchover.Config) {
			c.Deadline, c.PauseTimeout = time.Second, 3*time.Second
		}, "pause-timeout", "shorter than the deadline"},
		{"source without DSN", func(c *switchover.Config) { c.From.DSN = "" }, "clusters.old.dsn", "empty"},
		{"unparsable target DSN", func(c *switchover.Config) { c.To.DSN = "host=10.0.0.8 port=many" }, "clusters.new.dsn", "parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			errs := configErrors(t, c.Validate())
			var keys []string
			for _, ce := range errs {
				keys = append(keys, ce.Key)
				if ce.Key == tc.key && strings.Contains(ce.Reason, tc.reason) {
					if !strings.HasPrefix(ce.Error(), "switch."+tc.key+": ") {
						t.Errorf("Error() = %q does not start with the key", ce.Error())
					}
					return
				}
			}
			t.Fatalf("want an error on key %q saying %q, got keys %v: %v", tc.key, tc.reason, keys, errs)
		})
	}
}

func TestValidateRefusesEveryNonPositiveDuration(t *testing.T) {
	fields := map[string]func(*switchover.Config) *time.Duration{
		"deadline":            func(c *switchover.Config) *time.Duration { return &c.Deadline },
		"pause-timeout":       func(c *switchover.Config) *time.Duration { return &c.PauseTimeout },
		"max-lag":             func(c *switchover.Config) *time.Duration { return &c.MaxLag },
		"max-transaction-age": func(c *switchover.Config) *time.Duration { return &c.MaxTransactionAge },
		"probe-timeout":       func(c *switchover.Config) *time.Duration { return &c.ProbeTimeout },
	}
	for key, field := range fields {
		for _, d := range []time.Duration{0, -time.Second} {
			c := validConfig()
			*field(&c) = d
			var found bool
			for _, ce := range configErrors(t, c.Validate()) {
				found = found || ce.Key == key && strings.Contains(ce.Reason, "must be positive, got "+d.String())
			}
			if !found {
				t.Errorf("%s = %s: no error naming %s", key, d, key)
			}
		}
	}
}

// TestValidateRefusesUnwritableDatabaseName: PgBouncer's ini parser has no
// quoting, so a name it cannot read back, and its own console's name, are
// refused before the switch rewrites the databases file.
func TestValidateRefusesUnwritableDatabaseName(t *testing.T) {
	clearPGEnv(t)
	for _, db := range []string{"my app", "app;x", "app=1", "*", "app\nother = host=evil", "pgbouncer"} {
		c := validConfig()
		c.PgBouncer.Database = db
		errs := configErrors(t, c.Validate())
		var found bool
		for _, ce := range errs {
			// "pgbouncer.database" would be the sharper key.
			found = found || (ce.Key == "pgbouncer" || ce.Key == "pgbouncer.database") && strings.Contains(ce.Reason, "database name")
		}
		if !found {
			t.Errorf("database %q: want an error on pgbouncer naming the database, got %v", db, errs)
		}
	}
}

func TestValidateRefusesUnwritableEntry(t *testing.T) {
	clearPGEnv(t)
	for _, tc := range []struct {
		name   string
		entry  switchover.DatabaseEntry
		reason string
	}{
		{"port out of range", switchover.DatabaseEntry{Host: "10.0.1.8", Port: 70000, DBName: "app"}, "port 70000"},
		{"no port", switchover.DatabaseEntry{Host: "10.0.1.8", DBName: "app"}, "port 0"},
		{"no host", switchover.DatabaseEntry{Port: 5432, DBName: "app"}, "host is empty"},
		{"line break in dbname", switchover.DatabaseEntry{Host: "10.0.1.8", Port: 5432, DBName: "app\nevil = host=x"}, "line break"},
	} {
		c := validConfig()
		c.To.Entry = tc.entry
		var found bool
		for _, ce := range configErrors(t, c.Validate()) {
			found = found || strings.HasPrefix(ce.Key, "pgbouncer") && strings.Contains(ce.Reason, tc.reason)
		}
		if !found {
			t.Errorf("%s: entry %+v accepted", tc.name, tc.entry)
		}
	}
}

// TestValidateAdminErrorHidesPassword: the admin DSN's parse error is part
// of the refusal printed to the operator.
func TestValidateAdminErrorHidesPassword(t *testing.T) {
	c := validConfig()
	c.PgBouncer.Admin = []string{"postgres://pgbouncer:Adm1nS3cret@10.0.0.9:bad/pgbouncer"}
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "Adm1nS3cret") {
		t.Fatalf("want an error without the password, got %v", err)
	}
}

func TestValidateFillsEntryFromDSN(t *testing.T) {
	clearPGEnv(t)
	for _, tc := range []struct {
		name, dsn string
		want      switchover.DatabaseEntry
	}{
		{"URL", "postgres://app:pw@db1.example:5433/appdb?sslmode=disable", switchover.DatabaseEntry{Host: "db1.example", Port: 5433, DBName: "appdb"}},
		{"URL, default port", "postgres://app@db1.example/appdb", switchover.DatabaseEntry{Host: "db1.example", Port: 5432, DBName: "appdb"}},
		{"URL, IPv6", "postgres://app@[fd00::7]:5434/appdb", switchover.DatabaseEntry{Host: "fd00::7", Port: 5434, DBName: "appdb"}},
		{"keyword/value", "host=10.0.0.8 port=5433 dbname=app2 user=app password='a b'", switchover.DatabaseEntry{Host: "10.0.0.8", Port: 5433, DBName: "app2"}},
		{"keyword/value, default port", "host=10.0.0.8 dbname=app2", switchover.DatabaseEntry{Host: "10.0.0.8", Port: 5432, DBName: "app2"}},
		{"Unix socket", "host=/var/run/postgresql port=5435 dbname=app", switchover.DatabaseEntry{Host: "/var/run/postgresql", Port: 5435, DBName: "app"}},
		{"several hosts: the first", "host=10.0.0.8,10.0.0.9 port=5433,5434 dbname=app", switchover.DatabaseEntry{Host: "10.0.0.8", Port: 5433, DBName: "app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			c.To.DSN = tc.dsn
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if c.To.Entry != tc.want {
				t.Fatalf("entry %+v, want %+v", c.To.Entry, tc.want)
			}
			if got, err := switchover.EntryFromDSN(tc.dsn); err != nil || got != tc.want {
				t.Fatalf("EntryFromDSN = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := (switchover.DatabaseEntry{Host: "10.0.0.7", Port: 5432, DBName: "app"}); c.From.Entry != want {
		t.Fatalf("source entry %+v, want %+v", c.From.Entry, want)
	}
	if got := c.From.Entry.String(); got != "10.0.0.7:5432/app" {
		t.Fatalf("String() = %q", got)
	}
}

func TestValidateKeepsExplicitEntry(t *testing.T) {
	clearPGEnv(t)
	c := validConfig()
	explicit := switchover.DatabaseEntry{Host: "pooler-side.internal", Port: 6543, DBName: "app_new"}
	c.To.Entry = explicit
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.To.Entry != explicit {
		t.Fatalf("explicit entry replaced by %+v", c.To.Entry)
	}
	if want := (switchover.DatabaseEntry{Host: "10.0.0.7", Port: 5432, DBName: "app"}); c.From.Entry != want {
		t.Fatalf("empty source entry not filled from its DSN: %+v", c.From.Entry)
	}
}

func TestDefaultConfig(t *testing.T) {
	c := switchover.DefaultConfig()
	if c.Deadline != 10*time.Second || c.PauseTimeout != 2*time.Second || c.MaxLag != time.Second ||
		c.MaxTransactionAge != 5*time.Second || c.ProbeTimeout != 30*time.Second {
		t.Errorf("durations %+v", c)
	}
	if !slices.Equal(c.Fence, []string{switchover.FencePgBouncer, switchover.FenceDatabase}) || c.Redirect != switchover.RedirectPgBouncer {
		t.Errorf("fence %v, redirect %q; want [pgbouncer database], pgbouncer", c.Fence, c.Redirect)
	}
}
