package switchover

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// DatabaseEntry is where PgBouncer sends the server connections of one
// database: the value of its line in the [databases] section.
type DatabaseEntry struct {
	// Host is a host name, an IP address, or a Unix socket folder (starting
	// with /).
	Host string
	// Port is the server's TCP port, or the number of its Unix socket.
	Port int
	// DBName is the database on the server; empty means the same name as the
	// entry.
	DBName string
}

// entryName is what a database name may be in PgBouncer 1.18's ini parser,
// which knows no quoting of keys; "*" (the fallback entry) is left out.
var entryName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

func (e DatabaseEntry) validate(db string) error {
	switch {
	case !entryName.MatchString(db):
		return fmt.Errorf("database name %q cannot be written in a PgBouncer [databases] section: only letters, digits, '_', '.' and '-' are possible", db)
	case db == "pgbouncer":
		return errors.New(`the database name "pgbouncer" is PgBouncer's admin console`)
	case e.Host == "":
		return fmt.Errorf("entry for database %s: host is empty", db)
	case e.Port <= 0 || e.Port > 65535:
		return fmt.Errorf("entry for database %s: port %d is not a TCP port", db, e.Port)
	case strings.ContainsAny(e.Host+e.DBName, "\n\r\x00"):
		return fmt.Errorf("entry for database %s: host or dbname holds a line break or NUL, which a PgBouncer ini line cannot", db)
	}
	return nil
}

// connString renders the entry as PgBouncer parses it: key=value pairs
// separated by spaces, text values in single quotes, a quote inside doubled
// (PgBouncer knows no backslash escapes there).
func (e DatabaseEntry) connString() string {
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	s := fmt.Sprintf("host=%s port=%d", quote(e.Host), e.Port)
	if e.DBName != "" {
		s += " dbname=" + quote(e.DBName)
	}
	return s
}

// WriteDatabaseEntry replaces the file at path, which pgbouncer.ini
// %includes inside its [databases] section, by one line for database db:
//
//	db = host='10.0.0.7' port=5432 dbname='app'
//
// The file is pgtandem's: whatever else it held is gone. The write is atomic
// (a temporary file in the same folder, fsync, rename, fsync of the folder),
// so PgBouncer never reads half a file. The new file keeps the old one's
// permission bits (0644 when there was none), and its owner when the caller
// runs as root, so that PgBouncer can still read it.
func WriteDatabaseEntry(path, db string, target DatabaseEntry) error {
	if err := target.validate(db); err != nil {
		return err
	}
	content := fmt.Sprintf("; written by pgtandem switch; the whole file is replaced at every switch\n%s = %s\n", db, target.connString())
	mode, owner := os.FileMode(0o644), (*syscall.Stat_t)(nil)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
		owner, _ = st.Sys().(*syscall.Stat_t)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write PgBouncer databases file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	err = writeSynced(tmp, content, mode, owner)
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write PgBouncer databases file %s: %w", path, err)
	}
	return nil
}

func writeSynced(f *os.File, content string, mode os.FileMode, owner *syscall.Stat_t) error {
	if _, err := f.WriteString(content); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if owner != nil && os.Geteuid() == 0 {
		if err := f.Chown(int(owner.Uid), int(owner.Gid)); err != nil {
			return err
		}
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
