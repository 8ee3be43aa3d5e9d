package main

import (
	"strings"
	"testing"
)

// TestApplySkipArguments: `apply skip` refuses what cannot name one change
// before it connects anywhere, and says what it wants.
func TestApplySkipArguments(t *testing.T) {
	path := writeConfig(t, "clusters:\n  old: {dsn: postgres://app@127.0.0.1:1/app}\n  new: {dsn: postgres://app@127.0.0.1:1/app}\n")
	code, out, _ := runCLI(t, nil, "apply", "skip", "--help")
	if code != 0 || !strings.Contains(out, "--lsn") || !strings.Contains(out, "--change") || !strings.Contains(out, "pgtandem.apply_skips") {
		t.Errorf("apply skip --help: exit %d\n%s", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "old", "--to", "new", "--change", "1"}, `required flag(s) "lsn" not set`},
		{[]string{"--from", "old", "--to", "new", "--lsn", "0/1A2B3C8"}, `required flag(s) "change" not set`},
		{[]string{"--from", "old", "--to", "new", "--lsn", "1A2B3C8", "--change", "1"}, `--lsn "1A2B3C8" is not an LSN like 0/1A2B3C8`},
		{[]string{"--from", "old", "--to", "new", "--lsn", "0/1A2B3C8", "--change", "0"}, "--change 0: changes are numbered from 1"},
		{[]string{"--from", "old", "--to", "newer", "--lsn", "0/1A2B3C8", "--change", "1"}, "newer"},
	} {
		code, _, stderr := runCLI(t, nil, append([]string{"--config", path, "apply", "skip"}, c.args...)...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("apply skip %v: exit %d, stderr %q; want exit 1 and %q", c.args, code, stderr, c.want)
		}
	}
}
