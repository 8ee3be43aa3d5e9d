package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadConfigExitsNonZero runs the real binary with broken configurations:
// each must exit non-zero with an error naming the key, and never print the
// password of a DSN.
func TestBadConfigExitsNonZero(t *testing.T) {
	const pw = "Hunter2-e2e"
	cases := []struct{ yaml, want string }{
		{"clusters:\n  old: {dsn: \"postgres://app:" + pw + "@h/app\"}\n  new: {}\n", "clusters.new.dsn"},
		{"clusters:\n  old: {dsn: \"postgres://app:" + pw + "@h/app\"}\nbogus: 1\n", "bogus"},
		{"clusters:\n  old: {dsn: \"postgres://app:" + pw + "@h:notaport/app\"}\n", "clusters.old.dsn"},
		{"clusters:\n  old: {dsn: \"postgres://app:" + pw + "@h/app\"}\npulsar: {url: \"pulsar//h\"}\n", "pulsar.url"},
	}
	for _, tc := range cases {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		// A configuration accepted by mistake would start a long-running
		// capture: the timeout turns that into a failure, not a hang.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, pgtandemBin, "pg2broker", "--from", "old")
		cmd.Env = append(os.Environ(), "PGTANDEM_CONFIG="+path)
		out, err := cmd.CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("config %q: err %v, want a non-zero exit", tc.yaml, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("config %q: output %q does not name %q", tc.yaml, out, tc.want)
		}
		if strings.Contains(string(out), pw) {
			t.Errorf("config %q: output shows the password: %q", tc.yaml, out)
		}
	}
}
