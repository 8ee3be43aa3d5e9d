package switchover_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/internal/pgbouncertest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	switchover "github.com/pgtandem/pgtandem/switch"
)

func TestWriteDatabaseEntry(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "databases.ini")
	if err := os.WriteFile(path, []byte("app = host=old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	entry := switchover.DatabaseEntry{Host: "db new.internal", Port: 5433, DBName: "it's"}
	if err := switchover.WriteDatabaseEntry(path, "app", entry); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if want := `app = host='db new.internal' port=5433 dbname='it''s'`; lines[len(lines)-1] != want || !strings.HasPrefix(lines[0], ";") || len(lines) != 2 {
		t.Fatalf("want a comment and %q, got:\n%s", want, data)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("want the old mode 0640 kept, got %v, %v", st.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("want only the databases file left in %s, got %v", dir, entries)
	}

	if err := switchover.WriteDatabaseEntry(path, "app", switchover.DatabaseEntry{Host: "10.0.0.7", Port: 5432}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); !strings.HasSuffix(string(data), "\napp = host='10.0.0.7' port=5432\n") {
		t.Fatalf("an entry without dbname: got:\n%s", data)
	}
}

func TestWriteDatabaseEntryRefuses(t *testing.T) {
	valid := switchover.DatabaseEntry{Host: "10.0.0.7", Port: 5432, DBName: "app"}
	cases := map[string]struct {
		db    string
		entry switchover.DatabaseEntry
	}{
		"name with a space":    {"my app", valid},
		"fallback entry":       {"*", valid},
		"admin console":        {"pgbouncer", valid},
		"empty name":           {"", valid},
		"empty host":           {"app", switchover.DatabaseEntry{Port: 5432}},
		"port out of range":    {"app", switchover.DatabaseEntry{Host: "h", Port: 70000}},
		"line break in dbname": {"app", switchover.DatabaseEntry{Host: "h", Port: 5432, DBName: "a\n[pgbouncer]"}},
	}
	for name, c := range cases {
		path := filepath.Join(t.TempDir(), "databases.ini")
		if err := switchover.WriteDatabaseEntry(path, c.db, c.entry); err == nil {
			t.Errorf("%s: want an error, the file was written", name)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: want no file written, stat: %v", name, err)
		}
	}
}

// The quoting is PgBouncer's own: a database name with a space and both
// quote characters reaches the server intact.
func TestRedirectQuotedDatabaseName(t *testing.T) {
	ctx := context.Background()
	server := pgtest.Start(t, 15)
	const odd = `it's a "db"`
	if _, err := pgtest.Connect(t, server, db).Exec(ctx, `CREATE DATABASE "it's a ""db"""`); err != nil {
		t.Fatal(err)
	}
	bouncer := pgbouncertest.Start(t, server, db)
	admin, err := switchover.NewPgBouncer(bouncer.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Redirect(ctx, bouncer.DatabasesFile(), db, switchover.DatabaseEntry{Host: "127.0.0.1", Port: server.Port, DBName: odd}); err != nil {
		t.Fatal(err)
	}
	var current string
	if err := bouncer.Connect(t, db).QueryRow(ctx, "SELECT current_database()").Scan(&current); err != nil || current != odd {
		t.Fatalf("through the bouncer: current_database() = %q, %v; want %q", current, err, odd)
	}
}

// RELOAD succeeds whatever the files hold; Redirect notices when the entry
// did not take effect, here because the file written is not the included one.
func TestRedirectNotApplied(t *testing.T) {
	ctx := context.Background()
	server := pgtest.Start(t, 15)
	bouncer := pgbouncertest.Start(t, server, db)
	admin, err := switchover.NewPgBouncer(bouncer.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "databases.ini")
	err = admin.Redirect(ctx, elsewhere, db, switchover.DatabaseEntry{Host: "127.0.0.1", Port: server.Port + 1, DBName: db})
	var notApplied *switchover.RedirectNotAppliedError
	if !errors.As(err, &notApplied) || notApplied.Got == nil || notApplied.Got.Port != server.Port {
		t.Fatalf("want a *RedirectNotAppliedError showing port %d still in use, got %v", server.Port, err)
	}
	t.Log(err)
}
