package bootstrap

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// dumpTools are a pg_dump and the pg_restore beside it.
type dumpTools struct {
	pgDump, pgRestore string
	major             int
}

// ToolsNotFoundError reports that no pg_dump new enough for the source was
// found: an older pg_dump cannot read a newer server's catalogs.
type ToolsNotFoundError struct {
	SourceMajor int
	Searched    []string
}

func (e *ToolsNotFoundError) Error() string {
	return fmt.Sprintf("no pg_dump of major %d or newer found (searched %s): install the PostgreSQL %d client tools or pass --pg-dump PATH",
		e.SourceMajor, strings.Join(e.Searched, ", "), e.SourceMajor)
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// findDumpTools returns a pg_dump whose major is at least the source's:
// the one named, else the newest under /usr/lib/postgresql, else the one on
// PATH.
func findDumpTools(ctx context.Context, named string, sourceMajor int) (dumpTools, error) {
	var candidates []string
	if named != "" {
		candidates = append(candidates, named)
	} else {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
		// Newest first: the newest pg_dump reads every older server.
		for i := len(dirs) - 1; i >= 0; i-- {
			candidates = append(candidates, dirs[i])
		}
		if p, err := exec.LookPath("pg_dump"); err == nil {
			candidates = append(candidates, p)
		}
	}
	for _, path := range candidates {
		out, err := exec.CommandContext(ctx, path, "--version").Output()
		if err != nil {
			continue
		}
		m := versionRE.FindSubmatch(out)
		if m == nil {
			continue
		}
		major, _ := strconv.Atoi(string(m[1]))
		if major < sourceMajor {
			continue
		}
		restore := filepath.Join(filepath.Dir(path), "pg_restore")
		if _, err := exec.LookPath(restore); err != nil {
			continue
		}
		return dumpTools{pgDump: path, pgRestore: restore, major: major}, nil
	}
	return dumpTools{}, &ToolsNotFoundError{SourceMajor: sourceMajor, Searched: candidates}
}

// keywordSecret matches a password or options keyword of a key=value DSN.
var keywordSecret = regexp.MustCompile(`(?i)\b(password|options)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// runTool runs pg_dump or pg_restore against dsn, the password handed over
// in PGPASSWORD rather than on a command line every user can read. The
// session gets the text settings every pgtandem connection pins through
// PGOPTIONS, after the DSN's own options (libpq ignores PGOPTIONS when the
// DSN has options, and the last -c of a name wins): pg_dump prints column
// defaults with the session's lc_monetary and client_encoding, and
// pg_restore reads them back in its own session's settings.
func runTool(ctx context.Context, tool, dsn string, args ...string) error {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return err
	}
	options := catalog.TextSettingsOptions()
	if own := cfg.RuntimeParams["options"]; own != "" {
		options = own + " " + options
	}
	cmd := exec.CommandContext(ctx, tool, append([]string{"--dbname=" + toolDSN(dsn)}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+cfg.Password, "PGOPTIONS="+options)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// toolDSN is dsn without password and options, which runTool passes in the
// environment.
func toolDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			if u.User != nil {
				u.User = url.User(u.User.Username())
			}
			q := u.Query()
			q.Del("password")
			q.Del("options")
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return keywordSecret.ReplaceAllString(dsn, "")
}
