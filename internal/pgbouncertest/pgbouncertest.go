// Package pgbouncertest is the one way tests start a real PgBouncer in front
// of a PostgreSQL server started by internal/pgtest: on a free loopback port,
// in a temporary folder, in transaction pooling mode, without passwords, as
// the postgres OS user when the test runs as root (PgBouncer refuses root as
// PostgreSQL does).
//
// The [databases] section of pgbouncer.ini holds only an %include of a
// separate file, [Bouncer.DatabasesFile], with the one entry of the test's
// database: a switch rewrites that file and sends RELOAD, and the main file
// stays as it was.
//
// # Clients
//
// In transaction pooling a client gets another server connection for every
// transaction, so it must not rely on named prepared statements: PgBouncer
// 1.18 does not track them. [Bouncer.Connect] returns a pgx connection in
// the simple protocol for that reason.
package pgbouncertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/internal/pglocal"
)

// Option changes the bouncer a test starts.
type Option func(settings map[string]string)

// WithSetting sets one parameter of the [pgbouncer] section, e.g.
// WithSetting("query_wait_timeout", "5").
func WithSetting(name, value string) Option {
	return func(s map[string]string) { s[name] = value }
}

// Bouncer is one PgBouncer running for a test.
type Bouncer struct {
	// Port is its TCP port on 127.0.0.1.
	Port int
	// Dir holds pgbouncer.ini, the included databases file, the user list,
	// the Unix socket and the log.
	Dir string
	// LogFile is where PgBouncer's standard error goes.
	LogFile string

	cmd    *exec.Cmd
	exited chan struct{}
}

// programs are where PgBouncer is looked for, in order; Debian installs it
// in /usr/sbin, which is not on every PATH.
var programs = []string{"pgbouncer", "/usr/sbin/pgbouncer"}

// Start starts a PgBouncer whose database db leads to the database of the
// same name on backend, and stops it when the test ends (printing its log
// first when the test failed). The user postgres is the admin of its console.
//
// Under -short the test is skipped, as for pgtest.Start.
func Start(t testing.TB, backend *pglocal.Server, db string, opts ...Option) *Bouncer {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PgBouncer: not in -short mode")
	}
	program, err := findProgram()
	if err != nil {
		t.Fatal(err)
	}
	settings := defaultSettings()
	for _, opt := range opts {
		opt(settings)
	}
	dir, err := os.MkdirTemp("", "pgbouncertest-")
	if err != nil {
		t.Fatal(err)
	}
	b := &Bouncer{Dir: dir, LogFile: filepath.Join(dir, "pgbouncer.log")}
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("pgbouncertest: PgBouncer log (%s):\n%s", b.LogFile, b.LogTail(100))
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("pgbouncertest: remove %s: %v", dir, err)
		}
	})
	entry := fmt.Sprintf("%s = host=127.0.0.1 port=%d dbname=%s\n", db, backend.Port, db)
	if err := os.WriteFile(b.DatabasesFile(), []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	owner, err := postgresUser()
	if err != nil {
		t.Fatal(err)
	}
	// A port taken between picking it and PgBouncer binding it is replaced
	// by another, as pglocal does for PostgreSQL.
	const attempts = 3
	for i := 0; ; i++ {
		if b.Port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if err = b.start(program, settings, owner); err == nil {
			return b
		}
		if i == attempts-1 || !strings.Contains(b.LogTail(20), "Address already in use") {
			t.Fatalf("pgbouncertest: start PgBouncer in %s: %v\n%s", dir, err, b.LogTail(30))
		}
	}
}

// DSN returns a connection string for the user postgres to database db
// through the bouncer.
func (b *Bouncer) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", b.Port, db)
}

// AdminDSN returns a connection string to the admin console, the database
// named pgbouncer.
func (b *Bouncer) AdminDSN() string { return b.DSN("pgbouncer") }

// DatabasesFile is the file that pgbouncer.ini %includes inside its
// [databases] section. It belongs to the postgres OS user when the test
// runs as root; a rewrite must leave it readable by that user.
func (b *Bouncer) DatabasesFile() string { return filepath.Join(b.Dir, "databases.ini") }

// Connect opens a connection to database db through the bouncer, in the
// simple protocol, closed when the test ends.
func (b *Bouncer) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(b.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgbouncertest: connect to %s through PgBouncer on port %d: %v", db, b.Port, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// LogTail returns the last n lines of PgBouncer's log.
func (b *Bouncer) LogTail(n int) string {
	data, err := os.ReadFile(b.LogFile)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func defaultSettings() map[string]string {
	return map[string]string{
		"listen_addr": "127.0.0.1",
		"auth_type":   "trust",
		"admin_users": "postgres",
		"pool_mode":   "transaction",
		// pgx does not send extra_float_digits, but pgjdbc and lib/pq do,
		// and PgBouncer refuses startup parameters it does not know.
		"ignore_startup_parameters": "extra_float_digits",
	}
}

// start writes pgbouncer.ini for b.Port and runs PgBouncer in the
// foreground until its console accepts connections.
func (b *Bouncer) start(program string, settings map[string]string, owner *syscall.Credential) error {
	settings["listen_port"] = strconv.Itoa(b.Port)
	settings["unix_socket_dir"] = b.Dir
	settings["auth_file"] = filepath.Join(b.Dir, "userlist.txt")
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ini strings.Builder
	fmt.Fprintf(&ini, "[databases]\n%%include %s\n\n[pgbouncer]\n", b.DatabasesFile())
	for _, k := range keys {
		fmt.Fprintf(&ini, "%s = %s\n", k, settings[k])
	}
	conf := filepath.Join(b.Dir, "pgbouncer.ini")
	if err := os.WriteFile(conf, []byte(ini.String()), 0o644); err != nil {
		return err
	}
	if owner != nil {
		if err := chownAll(b.Dir, owner); err != nil {
			return err
		}
	}
	logFile, err := os.OpenFile(b.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(program, conf)
	cmd.Dir = b.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if owner != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	b.cmd, b.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("PgBouncer exited: %v", cmd.ProcessState)
		default:
		}
		if err := b.ping(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("PgBouncer's console does not accept connections: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *Bouncer) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, b.AdminDSN())
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// stop sends SIGTERM (PgBouncer's immediate shutdown) and waits for the
// process to end, killing it when it does not within ten seconds.
func (b *Bouncer) stop(t testing.TB) {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("pgbouncertest: PgBouncer (pid %d) still runs 10 s after SIGTERM; killing it", b.cmd.Process.Pid)
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}

func findProgram() (string, error) {
	for _, p := range programs {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("pgbouncertest: PgBouncer not found (searched %s); run scripts/install-deps.sh", strings.Join(programs, ", "))
}

// postgresUser returns the credential PgBouncer runs with: the postgres OS
// user when this process is root, nil otherwise.
func postgresUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgbouncertest: running as root, PgBouncer must run as the postgres OS user, which is missing: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func chownAll(dir string, owner *syscall.Credential) error {
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(owner.Uid), int(owner.Gid))
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
