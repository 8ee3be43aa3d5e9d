package pglocal

import (
	"bytes"
	"context"
	"errors"
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
	"time"
)

// Options describe a server to start.
type Options struct {
	// Major is the PostgreSQL major version, e.g. 17.
	Major int
	// Dir is the folder that holds the data directory (Dir/data), the server
	// log (Dir/server.log) and the Unix socket. Empty means a new temporary
	// folder. An existing data directory is started as it is, so a server can
	// be stopped and started again over the same Dir.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Settings are written to the server's configuration, overriding the
	// defaults of [DefaultSettings].
	Settings map[string]string
}

// DefaultSettings are what pgtandem needs of every server: logical decoding
// with room for the slots and senders of several pipelines, and loopback only.
func DefaultSettings() map[string]string {
	return map[string]string{
		"wal_level":             "logical",
		"max_replication_slots": "32",
		"max_wal_senders":       "32",
		"max_connections":       "100",
		"shared_buffers":        "64MB",
		"listen_addresses":      "'127.0.0.1'",
		"log_min_messages":      "warning",
		"log_line_prefix":       "'%m [%p] %q%u@%d '",
	}
}

// Server is one PostgreSQL server on 127.0.0.1.
type Server struct {
	Major   int
	Port    int
	Dir     string
	DataDir string
	LogFile string

	bin      Binaries
	settings map[string]string
	owner    *syscall.Credential // nil when not running as root
}

// Start initialises Options.Dir/data when it holds no cluster yet, writes the
// configuration and starts the server, waiting until it accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := FindBinaries(opts.Major)
	if err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", fmt.Sprintf("pglocal-%d-", opts.Major)); err != nil {
			return nil, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	s := &Server{
		Major:    opts.Major,
		Port:     opts.Port,
		Dir:      dir,
		DataDir:  filepath.Join(dir, "data"),
		LogFile:  filepath.Join(dir, "server.log"),
		bin:      bin,
		settings: DefaultSettings(),
	}
	for k, v := range opts.Settings {
		s.settings[k] = v
	}
	if os.Geteuid() == 0 {
		if s.owner, err = PostgresUser(); err != nil {
			return nil, err
		}
	}
	if err := s.prepareDir(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := s.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.Restart(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// DSN returns a connection string for the superuser `postgres` to database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// Restart starts a stopped or killed server again over the same data
// directory. A port taken by someone else meanwhile is replaced by a free one.
func (s *Server) Restart(ctx context.Context) error {
	const attempts = 3
	var err error
	for i := 0; i < attempts; i++ {
		if s.Port == 0 || i > 0 {
			if s.Port, err = FreePort(); err != nil {
				return err
			}
		}
		if err = s.writeConfig(); err != nil {
			return err
		}
		err = s.run(ctx, s.bin.Path("pg_ctl"), "start", "-w", "-t", "120", "-D", s.DataDir, "-l", s.LogFile)
		if err == nil {
			return nil
		}
		if !strings.Contains(s.LogTail(20), "could not bind") {
			break
		}
	}
	s.abandonStart()
	return fmt.Errorf("start PostgreSQL %d in %s: %w\n%s", s.Major, s.DataDir, err, s.LogTail(30))
}

// abandonStart stops whatever a failed or cancelled pg_ctl start left
// behind. pg_ctl may have been killed (ctx ended) after it forked the
// postmaster but before that postmaster wrote postmaster.pid: a look at the
// pid file alone would miss it, and nothing would ever stop it. So it waits,
// for at most two minutes, until no process started for this data directory
// is left: each one that has written its pid file is stopped (immediate
// mode), each one still starting is given the time to write it or exit.
func (s *Server) abandonStart() {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if s.Running() {
			_ = s.run(context.Background(), s.bin.Path("pg_ctl"), "stop", "-w", "-t", "60", "-m", "immediate", "-D", s.DataDir)
		}
		if !s.starting() || time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// starting reports whether a live process was started for this data
// directory: pg_ctl's fork, the shell it runs, or the postmaster that shell
// became, found by the data directory among their arguments in /proc
// (pg_ctl's shell gets it quoted inside its -c script).
func (s *Server) starting() bool {
	entries, _ := os.ReadDir("/proc")
	quoted := []byte(`"` + s.DataDir + `"`)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || isZombie(pid) {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(cmdline, []byte{0}) {
			if string(arg) == s.DataDir || bytes.Contains(arg, quoted) {
				return true
			}
		}
	}
	return false
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast).
func (s *Server) Stop(ctx context.Context) error {
	if !s.Running() {
		return nil
	}
	return s.run(ctx, s.bin.Path("pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D", s.DataDir)
}

// Kill sends SIGKILL to the postmaster and all its processes at once, as a
// crash of the machine would, and waits until they are gone so that the server
// can be started again over the same data directory.
func (s *Server) Kill(ctx context.Context) error {
	pid, err := s.postmasterPID()
	if err != nil {
		return err
	}
	pids := append(childPIDs(pid), pid)
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill PostgreSQL %d process %d: %w", s.Major, p, err)
		}
	}
	for _, p := range pids {
		for syscall.Kill(p, 0) == nil && !isZombie(p) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	// Where nothing reaps orphans (a container whose init does not), the dead
	// postmaster lingers as a zombie that a new postmaster would mistake for a
	// live one holding the lock files.
	locks, _ := filepath.Glob(filepath.Join(s.Dir, ".s.PGSQL.*"))
	for _, lock := range append(locks, filepath.Join(s.DataDir, "postmaster.pid")) {
		if err := os.Remove(lock); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Remove stops the server if it still runs (immediate mode: its data is
// being thrown away) and deletes its folder.
func (s *Server) Remove(ctx context.Context) error {
	if s.Running() {
		_ = s.run(ctx, s.bin.Path("pg_ctl"), "stop", "-w", "-t", "60", "-m", "immediate", "-D", s.DataDir)
	}
	return os.RemoveAll(s.Dir)
}

// Running reports whether the postmaster of this data directory is alive.
func (s *Server) Running() bool {
	pid, err := s.postmasterPID()
	return err == nil && syscall.Kill(pid, 0) == nil && !isZombie(pid)
}

// LogTail returns the last n lines of the server log.
func (s *Server) LogTail(n int) string {
	data, err := os.ReadFile(s.LogFile)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// postmasterPID reads the running server's postmaster process id from
// postmaster.pid in its data directory.
func (s *Server) postmasterPID() (int, error) {
	data, err := os.ReadFile(filepath.Join(s.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("PostgreSQL %d in %s is not running: %w", s.Major, s.DataDir, err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

func (s *Server) prepareDir() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	if s.owner == nil {
		return nil
	}
	// The server writes its log and socket here, so the postgres user must own
	// the folder.
	return GiveTo(s.Dir, s.owner)
}

// GiveTo makes dir and what it holds the owner's, and every parent of dir
// traversable for the owner (a test's temporary folder is not).
func GiveTo(dir string, owner *syscall.Credential) error {
	for parent := filepath.Dir(dir); parent != "/"; parent = filepath.Dir(parent) {
		st, err := os.Stat(parent)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(parent, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("make %s traversable for the postgres user: %w", parent, err)
			}
		}
	}
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(owner.Uid), int(owner.Gid))
	})
}

func (s *Server) initdb(ctx context.Context) error {
	err := s.run(ctx, s.bin.Path("initdb"), "-D", s.DataDir, "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("initdb PostgreSQL %d in %s: %w", s.Major, s.DataDir, err)
	}
	conf := filepath.Join(s.DataDir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("\ninclude 'pglocal.conf'\n")
	return err
}

// writeConfig rewrites pglocal.conf, which postgresql.conf includes, so that
// a restart can change the port without editing the main file.
func (s *Server) writeConfig() error {
	settings := map[string]string{
		"port":                    strconv.Itoa(s.Port),
		"unix_socket_directories": "'" + s.Dir + "'",
	}
	for k, v := range s.settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written by pgtandem's pglocal at every start\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	path := filepath.Join(s.DataDir, "pglocal.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if s.owner != nil {
		return os.Chown(path, int(s.owner.Uid), int(s.owner.Gid))
	}
	return nil
}

func (s *Server) run(ctx context.Context, program string, args ...string) error {
	cmd := exec.CommandContext(ctx, program, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.owner != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.owner}
	}
	// pg_ctl start leaves the postmaster holding our pipes; stop waiting for
	// them once pg_ctl itself has exited.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil && !(errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState.Success()) {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(program), args[0], err, strings.TrimSpace(out.String()))
	}
	return nil
}

// PostgresUser returns the postgres OS user's credential: PostgreSQL and
// PgBouncer refuse to run as root, so a root process starts them as that user.
func PostgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL and PgBouncer must run as the postgres OS user, which is missing (install postgresql-common or create it): %w", err)
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

// CPUTime is the CPU time (user + system) used so far by the server's
// postmaster and the processes it started (walsenders, apply workers,
// backends), those it has reaped included: a walsender that has exited
// still counts.
func (s *Server) CPUTime() (time.Duration, error) {
	pid, err := s.postmasterPID()
	if err != nil {
		return 0, err
	}
	// A child reaped between reading the postmaster and reading the child
	// would count nowhere, or twice in the other order; one that exits at
	// the very moment of a sample is the common case (a walsender whose
	// client just finished), so a sample during which the postmaster reaped
	// is taken again.
	for {
		before := procStat(pid)
		total := cpuTime(before, true)
		for _, child := range childPIDs(pid) {
			total += cpuTime(procStat(child), false)
		}
		if after := procStat(pid); len(before) < 15 || len(after) < 15 || cpuTime(before[2:], false) == cpuTime(after[2:], false) {
			return total, nil
		}
	}
}

// cpuTime is the CPU time in procStat's fields: utime and stime (fields 14
// and 15 in proc(5)) and, with reaped, cutime and cstime (16 and 17), the
// children's the process has waited for. A process gone leaves no fields.
func cpuTime(fields []string, reaped bool) time.Duration {
	if len(fields) < 15 {
		return 0
	}
	n := 2
	if reaped {
		n = 4
	}
	var ticks int64
	for _, f := range fields[11 : 11+n] {
		t, _ := strconv.ParseInt(f, 10, 64)
		ticks += t
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(ticks) * 10 * time.Millisecond
}

// childPIDs lists the processes whose parent is pid, from /proc.
func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var children []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if fields := procStat(child); len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			children = append(children, child)
		}
	}
	return children
}

func isZombie(pid int) bool {
	fields := procStat(pid)
	return len(fields) > 0 && fields[0] == "Z"
}

// procStat returns the fields of /proc/<pid>/stat after the command name:
// state, ppid, ...
func procStat(pid int) []string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
