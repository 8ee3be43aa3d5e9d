package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/config"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// switchClusters are the two clusters of every switch test; new's PgBouncer
// entry differs from its DSN (PgBouncer reaches it on another network).
const switchClusters = `clusters:
  old: {dsn: "postgres://app@10.0.0.7:5432/app"}
  new: {dsn: "postgres://app@10.0.0.8/app", pgbouncer-entry: "host=10.0.1.8 port=6000 dbname=app_new"}
`

const switchPgBouncer = `  pgbouncer:
    admin: ["postgres://pgbouncer@10.0.0.9:6432/pgbouncer"]
    database: app
    databases-file: /etc/pgbouncer/pgtandem.ini
`

// loadSwitch loads yaml, env and --set arguments as the CLI does and builds
// the switch from old to new.
func loadSwitch(t *testing.T, yaml string, env []string, set ...string) (switchover.Config, error) {
	t.Helper()
	for _, name := range []string{"PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE", "PGSERVICEFILE"} {
		t.Setenv(name, "")
	}
	cfg, err := loadConfig(configFlags{file: writeConfig(t, yaml), set: set}, nil, env)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return switchConfig(cfg, "old", "new", testTopic)
}

// testTopic names a cluster's topic without asking its server.
func testTopic(cl config.Cluster) (string, error) {
	return "persistent://public/default/t-" + cl.DSN.ConnString(), nil
}

func TestSwitchConfigFence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fence string // the switch.fence line, "" for none
		env   []string
		set   []string
		want  []string
	}{
		{"default", "", nil, nil, []string{"pgbouncer", "database"}},
		{"YAML scalar", "  fence: pgbouncer\n", nil, nil, []string{"pgbouncer"}},
		{"YAML scalar, another", "  fence: database\n", nil, nil, []string{"database"}},
		{"YAML list", "  fence: [pgbouncer, database]\n", nil, nil, []string{"pgbouncer", "database"}},
		{"YAML block list", "  fence:\n    - database\n    - pgbouncer\n", nil, nil, []string{"database", "pgbouncer"}},
		{"environment, comma separated", "  fence: database\n", []string{"PGTANDEM_SWITCH_FENCE=pgbouncer,database"}, nil, []string{"pgbouncer", "database"}},
		{"--set over the environment", "", []string{"PGTANDEM_SWITCH_FENCE=pgbouncer,database"}, []string{"switch.fence=database"}, []string{"database"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadSwitch(t, switchClusters+"switch:\n"+tc.fence+switchPgBouncer, tc.env, tc.set...)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Fence, tc.want) {
				t.Fatalf("fence %q, want %q", cfg.Fence, tc.want)
			}
		})
	}
}

func TestSwitchConfigValues(t *testing.T) {
	yaml := switchClusters + `switch:
  fence: [pgbouncer, hook]
  redirect: hook
  hooks: {fence: "fw close", unfence: "fw open", redirect: "dns set"}
  deadline: 3s
  pause-timeout: 500ms
  max-lag: 250ms
  max-transaction-age: 2s
  probe-timeout: 1m
` + switchPgBouncer
	env := []string{"PGTANDEM_SWITCH_PGBOUNCER_ADMIN=postgres://pgbouncer@10.0.0.9:6432/pgbouncer,postgres://pgbouncer@10.0.0.10:6432/pgbouncer",
		"PGTANDEM_SWITCH_MAX_LAG=300ms"}
	cfg, err := loadSwitch(t, yaml, env, "switch.deadline=4s")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Deadline != 4*time.Second || cfg.PauseTimeout != 500*time.Millisecond || cfg.MaxLag != 300*time.Millisecond ||
		cfg.MaxTransactionAge != 2*time.Second || cfg.ProbeTimeout != time.Minute {
		t.Errorf("durations: deadline %s, pause-timeout %s, max-lag %s, max-transaction-age %s, probe-timeout %s",
			cfg.Deadline, cfg.PauseTimeout, cfg.MaxLag, cfg.MaxTransactionAge, cfg.ProbeTimeout)
	}
	if cfg.Redirect != "hook" || cfg.Hooks != (switchover.Hooks{Fence: "fw close", Unfence: "fw open", Redirect: "dns set"}) {
		t.Errorf("redirect %q, hooks %+v", cfg.Redirect, cfg.Hooks)
	}
	wantAdmin := []string{"postgres://pgbouncer@10.0.0.9:6432/pgbouncer", "postgres://pgbouncer@10.0.0.10:6432/pgbouncer"}
	if !slices.Equal(cfg.PgBouncer.Admin, wantAdmin) || cfg.PgBouncer.Database != "app" || cfg.PgBouncer.DatabasesFile != "/etc/pgbouncer/pgtandem.ini" {
		t.Errorf("pgbouncer %+v", cfg.PgBouncer)
	}
	if cfg.From.Name != "old" || cfg.From.DSN != "postgres://app@10.0.0.7:5432/app" || cfg.To.Name != "new" || cfg.To.DSN != "postgres://app@10.0.0.8/app" {
		t.Errorf("clusters %+v -> %+v", cfg.From, cfg.To)
	}
	if want := (switchover.DatabaseEntry{Host: "10.0.0.7", Port: 5432, DBName: "app"}); cfg.From.Entry != want {
		t.Errorf("old's entry %+v, want %+v from its DSN", cfg.From.Entry, want)
	}
	if want := (switchover.DatabaseEntry{Host: "10.0.1.8", Port: 6000, DBName: "app_new"}); cfg.To.Entry != want {
		t.Errorf("new's entry %+v, want %+v from clusters.new.pgbouncer-entry", cfg.To.Entry, want)
	}
}

func TestSwitchConfigDefaults(t *testing.T) {
	cfg, err := loadSwitch(t, switchClusters+"switch:\n"+switchPgBouncer, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Deadline != 10*time.Second || cfg.PauseTimeout != 2*time.Second || cfg.MaxLag != time.Second ||
		cfg.MaxTransactionAge != 5*time.Second || cfg.ProbeTimeout != 30*time.Second {
		t.Errorf("durations %+v", cfg)
	}
	if !slices.Equal(cfg.Fence, []string{"pgbouncer", "database"}) || cfg.Redirect != "pgbouncer" {
		t.Errorf("fence %q, redirect %q", cfg.Fence, cfg.Redirect)
	}
	// new's entry without pgbouncer-entry: its DSN's host, the default port.
	cfg, err = loadSwitch(t, "clusters:\n  old: {dsn: \"postgres://app@10.0.0.7/app\"}\n  new: {dsn: \"host=10.0.0.8 dbname=app\"}\nswitch:\n"+switchPgBouncer, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (switchover.DatabaseEntry{Host: "10.0.0.8", Port: 5432, DBName: "app"}); cfg.To.Entry != want {
		t.Errorf("new's entry %+v, want %+v", cfg.To.Entry, want)
	}
}

func TestSwitchConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       string
	}{
		{"unknown fence", switchClusters + "switch:\n  fence: [pgbouncer, firewall]\n" + switchPgBouncer, nil, `switch.fence: unknown strategy "firewall"`},
		{"unknown fence from the environment", switchClusters + "switch:\n" + switchPgBouncer, []string{"PGTANDEM_SWITCH_FENCE=pgbouncer;database"}, `switch.fence: unknown strategy "pgbouncer;database"`},
		{"no PgBouncer", switchClusters, nil, "switch.pgbouncer.admin"},
		{"pause timeout past the deadline", switchClusters + "switch:\n  deadline: 1s\n" + switchPgBouncer, nil, "switch.pause-timeout"},
		{"negative duration", switchClusters + "switch:\n  max-lag: -1s\n" + switchPgBouncer, nil, "switch.max-lag: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadSwitch(t, tc.yaml, tc.env)
			var ce *switchover.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a *switchover.ConfigError saying %q, got %v", tc.want, err)
			}
			if code := exitCode(switchExit(err)); code != exitSwitchRefused {
				t.Fatalf("exit code %d, want %d", code, exitSwitchRefused)
			}
		})
	}
}

func TestSwitchConfigUnknownCluster(t *testing.T) {
	cfg, err := loadConfig(configFlags{file: writeConfig(t, switchClusters)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = switchConfig(cfg, "old", "newer", testTopic)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "clusters.newer.dsn" || !strings.Contains(err.Error(), "configured: new, old") {
		t.Fatalf("want an error on clusters.newer.dsn listing the clusters, got %v", err)
	}
}

// TestSwitchConfigBadEntry: loadConfig refuses a malformed pgbouncer-entry
// already; switchConfig names the key on its own too.
func TestSwitchConfigBadEntry(t *testing.T) {
	cfg := config.Default()
	cfg.Switch.PgBouncer = config.SwitchPgBouncer{Admin: []string{"postgres://pgbouncer@10.0.0.9:6432/pgbouncer"}, Database: "app", DatabasesFile: "/f"}
	cfg.Clusters = map[string]config.Cluster{
		"old": {DSN: "postgres://app@10.0.0.7/app", PgBouncerEntry: "host=10.0.1.7 port=fifty"},
		"new": {DSN: "postgres://app@10.0.0.8/app"},
	}
	_, err := switchConfig(cfg, "old", "new", testTopic)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "clusters.old.pgbouncer-entry" {
		t.Fatalf("want an error on clusters.old.pgbouncer-entry, got %v", err)
	}
	path := writeConfig(t, "clusters:\n  old: {dsn: \"postgres://app@10.0.0.7/app\", pgbouncer-entry: \"host=h port=fifty\"}\n")
	if _, err := loadConfig(configFlags{file: path}, nil, nil); err == nil || !strings.Contains(err.Error(), "clusters.old.pgbouncer-entry") {
		t.Fatalf("load: want an error on clusters.old.pgbouncer-entry, got %v", err)
	}
}

// exitCode is the code run returns for err.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func TestSwitchExit(t *testing.T) {
	cause := errors.New("connection refused")
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&switchover.PreflightError{Check: "lag", Detail: "3s"}, exitSwitchRefused},
		{&switchover.InProgressError{Live: true}, exitSwitchRefused},
		{&switchover.NothingToResumeError{}, exitSwitchRefused},
		{&switchover.PastPointOfNoReturnError{SwitchID: "sw-1"}, exitSwitchRefused},
		{&switchover.ConfigError{Key: "fence", Reason: "unknown"}, exitSwitchRefused},
		{errors.Join(&switchover.ConfigError{Key: "fence"}, &switchover.ConfigError{Key: "deadline"}), exitSwitchRefused},
		{&switchover.UndoneError{SwitchID: "sw-1", Step: "marker", Cause: cause}, exitSwitchUndone},
		{&switchover.UndoFailedError{SwitchID: "sw-1", Cause: cause, UndoErr: cause}, exitSwitchStuck},
		{&switchover.NotResumedError{SwitchID: "sw-1", To: "new", Cause: cause}, exitSwitchStuck},
		// The undo's own failure may wrap a refusal-looking cause: stuck
		// wins over refused and undone.
		{&switchover.UndoFailedError{SwitchID: "sw-1", Cause: &switchover.PreflightError{Check: "x"}, UndoErr: cause}, exitSwitchStuck},
		{&switchover.NotResumedError{SwitchID: "sw-1", Cause: &switchover.HookError{Action: "redirect", Err: cause}}, exitSwitchStuck},
		{&switchover.UndoneError{SwitchID: "sw-1", Cause: &switchover.HookError{Action: "fence", Err: cause}}, exitSwitchUndone},
		{&switchover.UndoFailedError{SwitchID: "sw-1", Cause: &switchover.UndoneError{SwitchID: "sw-0", Cause: cause}, UndoErr: cause}, exitSwitchStuck},
		{&switchover.HookError{Action: "fence", Err: cause}, 1},
		{cause, 1},
	} {
		for _, err := range []error{tc.err, wrap(tc.err)} {
			got := switchExit(err)
			if code := exitCode(got); code != tc.want {
				t.Errorf("%v: exit %d, want %d", err, code, tc.want)
			}
			if err != nil && (got == nil || got.Error() != err.Error()) {
				t.Errorf("%v: message changed to %v", err, got)
			}
		}
	}
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cluster old: %w", err)
}

func TestKillAfter(t *testing.T) {
	if killAfter("") != nil {
		t.Fatal(`killAfter("") must be nil: the switch would call it after every step`)
	}
	if killAfter("marker") == nil {
		t.Fatal(`killAfter("marker") is nil`)
	}
}

// TestSwitchCommandRefusesBeforeConnecting: bad input exits 2 without
// reaching any cluster (the DSNs point at addresses nothing listens on).
func TestSwitchCommandRefusesBeforeConnecting(t *testing.T) {
	good := writeConfig(t, switchClusters+"switch:\n"+switchPgBouncer)
	bad := writeConfig(t, switchClusters+"switch:\n  fence: moat\n"+switchPgBouncer)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", bad, "switch", "--from", "old", "--to", "new"}, `switch.fence: unknown strategy "moat"`},
		{[]string{"--config", good, "switch", "--from", "old", "--to", "old"}, "cannot be its own target"},
		{[]string{"--config", good, "switch", "--from", "old", "--to", "newer"}, "clusters.newer.dsn"},
		{[]string{"--config", good, "switch", "--from", "old", "--to", "new", "--dry-run", "--abort"}, "exclude each other"},
	} {
		code, _, stderr := runCLI(t, nil, tc.args...)
		if code != exitSwitchRefused || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args[3:], code, stderr, exitSwitchRefused, tc.want)
		}
	}
}
