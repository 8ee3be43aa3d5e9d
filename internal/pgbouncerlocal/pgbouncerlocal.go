// Package pgbouncerlocal runs a real PgBouncer on this machine in front of a
// PostgreSQL server started by [pglocal], the way pglocal runs PostgreSQL:
// on a free loopback port, in a folder of its own, in transaction pooling
// mode, without passwords (the user postgres is trusted and is the admin of
// the console), as the postgres OS user when this process is root
// (PgBouncer refuses root as PostgreSQL does). `pgtandem demo` puts its
// clients behind one; tests start it through internal/pgbouncertest.
//
// # The databases file
//
// The [databases] section of pgbouncer.ini holds only an %include of a
// separate file, [Bouncer.DatabasesFile], with the one entry clients use: a
// switch rewrites that file and sends RELOAD, and the main file stays as it
// was.
//
// # Clients
//
// In transaction pooling a client gets another server connection for every
// transaction, so it must not rely on named prepared statements: PgBouncer
// 1.18 does not track them. Clients use the simple protocol.
//
// # Stopping
//
// PgBouncer runs in its own process group, so that a Ctrl-C on the terminal
// reaches only the program that started it, which stops it with
// [Bouncer.Stop] once its clients are done. [StopStale] stops one that a
// killed program left running.
package pgbouncerlocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/internal/pglocal"
)

// Options describe a PgBouncer to start.
type Options struct {
	// Dir holds pgbouncer.ini, the included databases file, the user list,
	// the Unix socket, the pid file and the log. It is created when
	// missing; empty means a new temporary folder.
	Dir string
	// Backend is the server clients reach through the bouncer.
	Backend *pglocal.Server
	// Database is the [databases] entry clients use; it leads to the
	// database of the same name on Backend.
	Database string
	// Settings are [pgbouncer] parameters overriding [DefaultSettings],
	// e.g. "query_wait_timeout": "5".
	Settings map[string]string
}

// DefaultSettings are the [pgbouncer] parameters every bouncer starts with,
// besides the port and paths.
func DefaultSettings() map[string]string {
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

// Bouncer is one running PgBouncer.
type Bouncer struct {
	// Port is its TCP port on 127.0.0.1.
	Port int
	// Dir holds its configuration, socket, pid file and log.
	Dir string
	// LogFile is where PgBouncer's standard error goes.
	LogFile string

	cmd    *exec.Cmd
	exited chan struct{}
}

// programs are where PgBouncer is looked for, in order; Debian installs it
// in /usr/sbin, which is not on every PATH.
var programs = []string{"pgbouncer", "/usr/sbin/pgbouncer"}

// startAttempts bounds the retries when the free port picked is taken
// before PgBouncer binds it, as pglocal does for PostgreSQL.
const startAttempts = 3

// Start writes the configuration into opts.Dir and starts PgBouncer,
// returning once its console accepts connections. On error nothing is left
// running; the error ends with the tail of PgBouncer's log.
func Start(ctx context.Context, opts Options) (*Bouncer, error) {
	if opts.Backend == nil || opts.Database == "" {
		return nil, errors.New("pgbouncerlocal: a backend server and a database are required")
	}
	program, err := findProgram()
	if err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pgbouncer-"); err != nil {
			return nil, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b, err := start(ctx, program, dir, opts)
	if err != nil && opts.Dir == "" {
		_ = os.RemoveAll(dir)
	}
	return b, err
}

func start(ctx context.Context, program, dir string, opts Options) (*Bouncer, error) {
	b := &Bouncer{Dir: dir, LogFile: filepath.Join(dir, "pgbouncer.log")}
	entry := fmt.Sprintf("%s = host=127.0.0.1 port=%d dbname=%s\n", opts.Database, opts.Backend.Port, opts.Database)
	if err := os.WriteFile(b.DatabasesFile(), []byte(entry), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		return nil, err
	}
	owner, err := postgresUser()
	if err != nil {
		return nil, err
	}
	settings := DefaultSettings()
	for k, v := range opts.Settings {
		settings[k] = v
	}
	for i := 0; ; i++ {
		if b.Port, err = pglocal.FreePort(); err != nil {
			return nil, err
		}
		if err = b.start(ctx, program, settings, owner); err == nil {
			return b, nil
		}
		if i == startAttempts-1 || ctx.Err() != nil || !strings.Contains(b.LogTail(20), "Address already in use") {
			return nil, fmt.Errorf("start PgBouncer in %s: %w\n%s", dir, err, b.LogTail(30))
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
// [databases] section. It belongs to the postgres OS user when this process
// is root; a rewrite must leave it readable by that user.
func (b *Bouncer) DatabasesFile() string { return filepath.Join(b.Dir, "databases.ini") }

// Pid is the process id of PgBouncer.
func (b *Bouncer) Pid() int { return b.cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (b *Bouncer) Running() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
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

// stopTimeout is how long Stop waits after SIGTERM before it kills.
const stopTimeout = 10 * time.Second

// Stop sends SIGTERM (PgBouncer's immediate shutdown: clients are
// disconnected) and waits for the process to end. When it has not within
// ten seconds, Stop kills it and says so.
func (b *Bouncer) Stop() error {
	if b.cmd == nil || !b.Running() {
		return nil
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		return nil
	case <-time.After(stopTimeout):
		_ = b.cmd.Process.Kill()
		<-b.exited
		return fmt.Errorf("PgBouncer (pid %d) still ran %s after SIGTERM; killed it", b.cmd.Process.Pid, stopTimeout)
	}
}

// pidFile is where PgBouncer writes its pid, for StopStale.
func pidFile(dir string) string { return filepath.Join(dir, "pgbouncer.pid") }

// StopStale stops (SIGTERM, then SIGKILL after ten seconds) a PgBouncer
// that a killed program left running on dir, found by its pid file.
func StopStale(dir string) {
	data, err := os.ReadFile(pidFile(dir))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return
	}
	// The pid may have been reused since: only a pgbouncer is stopped.
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(cmdline), "pgbouncer") {
		return
	}
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	for deadline := time.Now().Add(stopTimeout); syscall.Kill(pid, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
}

// start writes pgbouncer.ini for b.Port and runs PgBouncer in the
// foreground until its console accepts connections.
func (b *Bouncer) start(ctx context.Context, program string, settings map[string]string, owner *syscall.Credential) error {
	settings["listen_port"] = strconv.Itoa(b.Port)
	settings["unix_socket_dir"] = b.Dir
	settings["auth_file"] = filepath.Join(b.Dir, "userlist.txt")
	settings["pidfile"] = pidFile(b.Dir)
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
		if err := pglocal.GiveTo(b.Dir, owner); err != nil {
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: owner}
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
		err := b.ping(ctx)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil || time.Now().After(deadline):
			_ = b.Stop()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("PgBouncer's console does not accept connections: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *Bouncer) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, b.AdminDSN())
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func findProgram() (string, error) {
	for _, p := range programs {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("PgBouncer not found (searched %s); run scripts/install-deps.sh", strings.Join(programs, ", "))
}

// postgresUser returns the credential PgBouncer runs with: the postgres OS
// user when this process is root, nil otherwise.
func postgresUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	return pglocal.PostgresUser()
}
