package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/internal/config"
)

const password = "s3cr3tPW-9f2c"

func runCLI(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, environ, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pgtandem.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHelpListsSubcommands(t *testing.T) {
	code, out, _ := runCLI(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, sub := range []string{"broker", "pg2broker", "broker2pg", "init", "verify", "status", "demo", "version"} {
		if !strings.Contains(out, "\n  "+sub+" ") {
			t.Errorf("--help does not list %q:\n%s", sub, out)
		}
	}
	for _, args := range [][]string{{"broker", "serve", "--help"}, {"pg2broker", "--help"}, {"broker2pg", "--help"}, {"verify", "--help"}} {
		code, out, _ := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(out, "Usage:") || !strings.Contains(out, "--config") {
			t.Errorf("%v: exit %d, output:\n%s", args, code, out)
		}
	}
	code, out, _ = runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "pgtandem ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		env  []string
		want string
	}{
		{
			name: "unknown key in file",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\npulsar:\n  urll: pulsar://h:6650\n",
			want: "config: pulsar.urll: unknown key",
		},
		{
			name: "unknown key under a cluster",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app, dns: x}\n",
			want: "config: clusters.old.dns: unknown key",
		},
		{
			name: "missing dsn",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\n  new: {topic: persistent://public/default/x}\n",
			want: "config: clusters.new.dsn: is missing",
		},
		{
			name: "cluster declared without keys",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\n  new: {}\n  other:\n",
			want: "config: clusters.new.dsn: is missing",
		},
		{
			name: "cluster not configured at all",
			yaml: "clusters:\n  new: {dsn: postgres://app@h/app}\n",
			want: "config: clusters.old.dsn: is missing",
		},
		{
			name: "malformed pulsar url",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\npulsar:\n  url: http://h:6650\n",
			want: "config: pulsar.url:",
		},
		{
			name: "pulsar url without port",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\npulsar:\n  url: pulsar://h\n",
			want: "config: pulsar.url:",
		},
		{
			name: "unknown environment variable",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\n",
			env:  []string{"PGTANDEM_PULSAR_URLL=pulsar://h:1"},
			want: "config: PGTANDEM_PULSAR_URLL: unknown environment variable",
		},
		{
			name: "bad log level",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\nlog: {level: loud}\n",
			want: "config: log.level:",
		},
		{
			name: "wrong type",
			yaml: "clusters:\n  old: {dsn: postgres://app@h/app}\nbroker: {max-message-size: lots}\n",
			want: "max-message-size",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			code, _, stderr := runCLI(t, tc.env, "--config", path, "pg2broker", "--from", "old")
			if code == 0 {
				t.Fatalf("exit 0, want an error naming %q", tc.want)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr %q does not contain %q", stderr, tc.want)
			}
		})
	}
}

func TestMissingConfigFile(t *testing.T) {
	code, _, stderr := runCLI(t, nil, "--config", "/nonexistent/pgtandem.yaml", "status")
	if code == 0 || !strings.Contains(stderr, "/nonexistent/pgtandem.yaml") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// TestPrecedence checks file < environment < flags, key by key.
func TestPrecedence(t *testing.T) {
	path := writeConfig(t, "clusters:\n  old: {dsn: postgres://file@h/app, topic: persistent://public/default/from-file}\npulsar:\n  url: pulsar://file:6650\n")
	load := func(env []string, args ...string) config.Config {
		t.Helper()
		cmd := newRootCmd(env, &bytes.Buffer{}, &bytes.Buffer{})
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		set, _ := cmd.Flags().GetStringArray("set")
		cfg, err := loadConfig(configFlags{file: path, set: set}, cmd.Flags(), env)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := load(nil)
	if cfg.Pulsar.URL != "pulsar://file:6650" || cfg.Clusters["old"].DSN.ConnString() != "postgres://file@h/app" {
		t.Fatalf("file values not loaded: %+v", cfg)
	}
	env := []string{"PGTANDEM_PULSAR_URL=pulsar://env:6650", "PGTANDEM_CLUSTERS_OLD_DSN=postgres://env@h/app", "PGTANDEM_CLUSTERS_NEW_DSN=postgres://env@h2/app"}
	cfg = load(env)
	if cfg.Pulsar.URL != "pulsar://env:6650" || cfg.Clusters["old"].DSN.ConnString() != "postgres://env@h/app" {
		t.Fatalf("env does not override file: %+v", cfg)
	}
	if cfg.Clusters["old"].Topic != "persistent://public/default/from-file" {
		t.Fatalf("env for one key lost the file's other key of the same cluster: %+v", cfg.Clusters["old"])
	}
	if cfg.Clusters["new"].DSN.ConnString() != "postgres://env@h2/app" {
		t.Fatalf("env did not add cluster new: %+v", cfg.Clusters)
	}
	cfg = load(env, "--pulsar-url", "pulsar://flag:6650", "--set", "clusters.old.dsn=postgres://flag@h/app")
	if cfg.Pulsar.URL != "pulsar://flag:6650" || cfg.Clusters["old"].DSN.ConnString() != "postgres://flag@h/app" {
		t.Fatalf("flags do not override env: %+v", cfg)
	}
	topic, err := cfg.TopicFor("new", 17)
	if err != nil || topic != "persistent://public/default/pgtandem-pg17" {
		t.Fatalf("derived topic of new = %q, %v", topic, err)
	}
}

// TestPasswordNeverPrinted drives every error path a DSN can reach and
// checks that its password appears in no output.
func TestPasswordNeverPrinted(t *testing.T) {
	dsns := []string{
		"postgres://app:" + password + "@db:badport/app",
		"postgres://app:" + password + "@[::1/app",
		"postgres://app:" + password + "@db:5432/app?sslmode=bogus",
		"postgres://app@db:5432/app?password=" + password + "&port=x",
		"host=db port=abc password=" + password,
		"host=db password='" + password + "' sslmode=nope",
		"postgres://app:" + password + "@db:5432/app",
	}
	for i, dsn := range dsns {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			// A valid DSN with a bad URL still reaches the error paths
			// that print the config.
			path := writeConfig(t, fmt.Sprintf("clusters:\n  old: {dsn: %q}\npulsar: {url: \"bad\"}\n", dsn))
			for _, args := range [][]string{
				{"--config", path, "pg2broker", "--from", "old"},
				{"--config", path, "verify", "--from", "old", "--to", "new"},
				{"--set", "clusters.old.dsn=" + dsn, "--set", "pulsar.url=pulsar://h:1", "init", "--from", "old", "--to", "old"},
				{"--set", "clusters.old.dsn=" + dsn, "--set", "broker.dedup=" + password, "status"},
			} {
				code, stdout, stderr := runCLI(t, []string{"PGTANDEM_CLUSTERS_NEW_DSN=" + dsn}, args...)
				if code == 0 {
					t.Errorf("%v: exit 0", args)
				}
				if strings.Contains(stdout+stderr, password) {
					t.Errorf("%v printed the password:\n%s%s", args, stdout, stderr)
				}
			}
		})
	}
	// Values that hold a DSN print redacted however they are formatted or logged.
	cfg := config.Config{Clusters: map[string]config.Cluster{"old": {DSN: config.DSN(dsns[6])}}, Pulsar: config.Pulsar{AuthToken: password}}
	var buf bytes.Buffer
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		fmt.Fprintf(&buf, format+"\n", cfg)
		fmt.Fprintf(&buf, format+"\n", cfg.Clusters["old"].DSN)
	}
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cluster", "dsn", cfg.Clusters["old"].DSN, "token", cfg.Pulsar.AuthToken, "cfg", cfg)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("cluster", "dsn", cfg.Clusters["old"].DSN, "token", cfg.Pulsar.AuthToken)
	if strings.Contains(buf.String(), password) {
		t.Fatalf("formatted config shows the password:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "postgres://app:xxxxx@db:5432/app") {
		t.Fatalf("redacted DSN not shown usefully:\n%s", buf.String())
	}
}
