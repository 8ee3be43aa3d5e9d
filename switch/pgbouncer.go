package switchover

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// UndoTimeout bounds the RESUME and the checks that follow a PAUSE which did
// not complete in time. They run after the caller's context has ended, so
// they need a deadline of their own.
const UndoTimeout = 5 * time.Second

// PgBouncer is the admin console of one PgBouncer instance. Every call opens
// its own console connection and closes it before returning, so that a PAUSE
// given up on can be cancelled by closing its connection alone (see
// [PgBouncer.Pause]). The console accepts only the simple query protocol.
type PgBouncer struct {
	config *pgconn.Config
	name   string
}

// NewPgBouncer returns the console reached by adminDSN: a connection string
// to the database "pgbouncer" of the instance, as a user listed in its
// admin_users, e.g. "postgres://pgbouncer@10.0.0.5:6432/pgbouncer".
func NewPgBouncer(adminDSN string) (*PgBouncer, error) {
	config, err := pgconn.ParseConfig(adminDSN)
	if err != nil {
		return nil, fmt.Errorf("PgBouncer admin connection string: %w", err)
	}
	if config.Database != "pgbouncer" {
		return nil, fmt.Errorf("PgBouncer admin connection string names database %q: the admin console is the database \"pgbouncer\"", config.Database)
	}
	return &PgBouncer{config: config, name: fmt.Sprintf("PgBouncer %s:%d", config.Host, config.Port)}, nil
}

// String names the instance in errors and logs: "PgBouncer host:port".
func (b *PgBouncer) String() string { return b.name }

// PauseTimeoutError reports a PAUSE that did not complete before the
// caller's context ended, because server connections of the database stayed
// linked to clients: in transaction pooling, transactions that did not end
// (a client idle in transaction holds its server connection until it
// commits). The database was resumed again unless ResumeErr says otherwise.
type PauseTimeoutError struct {
	Bouncer  string
	Database string
	// Waited is how long PAUSE waited before it was given up.
	Waited time.Duration
	// ServersActive counts the server connections still linked to a client
	// when PAUSE was given up (sv_active of SHOW POOLS); -1 when unknown.
	ServersActive int
	// Cause is the context's error: context.DeadlineExceeded or
	// context.Canceled.
	Cause error
	// ResumeErr is why the database may still be paused; nil when RESUME
	// succeeded and SHOW DATABASES showed it not paused.
	ResumeErr error
}

func (e *PauseTimeoutError) Error() string {
	busy := "some server connections"
	if e.ServersActive >= 0 {
		busy = fmt.Sprintf("%d server connection(s)", e.ServersActive)
	}
	msg := fmt.Sprintf("%s: PAUSE %s did not complete within %s (%v): %s still in a transaction; look for sessions 'idle in transaction' or long transactions in pg_stat_activity on the server",
		e.Bouncer, e.Database, e.Waited.Round(time.Millisecond), e.Cause, busy)
	if e.ResumeErr != nil {
		return msg + fmt.Sprintf("; undoing the PAUSE failed, the database may still be paused (run RESUME %s on the console): %v", e.Database, e.ResumeErr)
	}
	return msg + "; the database was resumed"
}

// Unwrap returns the context's error, so that errors.Is(err,
// context.DeadlineExceeded) holds for a PAUSE that ran out of time.
func (e *PauseTimeoutError) Unwrap() error { return e.Cause }

// Pause runs PAUSE db: PgBouncer stops handing server connections of db to
// clients, waits until every server connection of db is released (in
// transaction pooling: until running transactions end) and closes them.
// Pause returns once that is done; from then on, queries of clients of db
// wait in PgBouncer (up to its query_wait_timeout, 120 s by default) until
// [PgBouncer.Resume]. PgBouncer 1.18 answers a PAUSE only once every paused
// database of the instance is drained, so pausing several databases of one
// instance completes for all of them together.
//
// When ctx ends first, Pause closes the waiting console connection, sends
// RESUME db on a fresh one, checks with SHOW DATABASES that db is not
// paused, and returns a [*PauseTimeoutError]. A RESUME sent on another
// connection while a PAUSE still waits would leave that PAUSE waiting for
// ever (PgBouncer issue #715), hence the close first.
func (b *PgBouncer) Pause(ctx context.Context, db string) error {
	if db == "" {
		return fmt.Errorf("%s: PAUSE needs a database name", b)
	}
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = conn.Exec(ctx, "PAUSE "+quoteIdent(db)).ReadAll()
	closeConn(conn)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil {
		return fmt.Errorf("%s: PAUSE %s: %w", b, db, err)
	}
	return b.undoPause(ctx, db, time.Since(start))
}

func (b *PgBouncer) undoPause(ctx context.Context, db string, waited time.Duration) error {
	timeoutErr := &PauseTimeoutError{Bouncer: b.String(), Database: db, Waited: waited, ServersActive: -1, Cause: ctx.Err()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), UndoTimeout)
	defer cancel()
	if pools, err := b.Pools(ctx); err == nil {
		timeoutErr.ServersActive = 0
		for _, p := range pools {
			if p.Database == db {
				timeoutErr.ServersActive += p.ServersActive
			}
		}
	}
	if err := b.Resume(ctx, db); err != nil {
		timeoutErr.ResumeErr = err
		return timeoutErr
	}
	d, err := b.Database(ctx, db)
	switch {
	case err != nil:
		timeoutErr.ResumeErr = err
	case d == nil:
		timeoutErr.ResumeErr = errors.New("SHOW DATABASES shows no such database")
	case d.Paused:
		timeoutErr.ResumeErr = errors.New("SHOW DATABASES still shows it paused after RESUME")
	}
	return timeoutErr
}

// Resume runs RESUME db: clients waiting for db get server connections
// again. A database that is not paused is left as it is without error, so
// that an undo can always call Resume.
func (b *PgBouncer) Resume(ctx context.Context, db string) error {
	if db == "" {
		return fmt.Errorf("%s: RESUME needs a database name", b)
	}
	err := b.exec(ctx, "RESUME "+quoteIdent(db))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasSuffix(pgErr.Message, " is not paused") {
		return nil
	}
	return err
}

// Reload runs RELOAD: PgBouncer reads its configuration files again. When a
// [databases] entry's host, port or dbname changed, its server connections
// are closed as they are released and new ones go to the new place.
//
// PgBouncer 1.18 answers RELOAD with success even when a file fails to parse
// (it only logs "config file loading failed" and keeps the old settings):
// check the outcome with [PgBouncer.Databases], as [PgBouncer.Redirect] does.
func (b *PgBouncer) Reload(ctx context.Context) error {
	return b.exec(ctx, "RELOAD")
}

// RedirectNotAppliedError reports that after writing the databases file and
// RELOAD, SHOW DATABASES does not show the new entry. PgBouncer reports
// errors of its configuration files only in its log.
type RedirectNotAppliedError struct {
	Bouncer  string
	Database string
	File     string
	Want     DatabaseEntry
	// Got is the entry PgBouncer shows; nil when it shows none for Database.
	Got *Database
}

func (e *RedirectNotAppliedError) Error() string {
	got := "no such database"
	if e.Got != nil {
		got = fmt.Sprintf("host=%s port=%d dbname=%s", e.Got.Host, e.Got.Port, e.Got.DBName)
	}
	return fmt.Sprintf("%s: after RELOAD, database %s shows %s instead of %s; is %s included in its [databases] section, and what does its log say about the reload?",
		e.Bouncer, e.Database, got, e.Want.connString(), e.File)
}

// Redirect points database db of the bouncer at target: it rewrites the
// databases file at path with [WriteDatabaseEntry], runs RELOAD and checks
// with SHOW DATABASES that the entry took effect, returning a
// [*RedirectNotAppliedError] when it did not. Server connections to the
// previous place close as they are released; run it between Pause and
// Resume so that no transaction runs on either side meanwhile.
//
// Keep the Redirect and the Resume back to back. After the RELOAD, PgBouncer
// no longer has the server's parameters to greet new clients with, so a
// client logging in before RESUME makes it open a server connection, which
// the pause closes at once. PgBouncer 1.18 counts that as a failed login and
// opens no server connection of db for server_login_retry (15 s by default):
// every client of db then waits that long after RESUME. Setting
// server_login_retry to 0 on the console for the window avoids it (a RELOAD
// restores the file's value).
func (b *PgBouncer) Redirect(ctx context.Context, path, db string, target DatabaseEntry) error {
	if err := WriteDatabaseEntry(path, db, target); err != nil {
		return err
	}
	if err := b.Reload(ctx); err != nil {
		return err
	}
	got, err := b.Database(ctx, db)
	if err != nil {
		return err
	}
	wantDB := target.DBName
	if wantDB == "" {
		wantDB = db
	}
	if got == nil || got.Host != target.Host || got.Port != target.Port || got.DBName != wantDB {
		return &RedirectNotAppliedError{Bouncer: b.String(), Database: db, File: path, Want: target, Got: got}
	}
	return nil
}

// Pool is one row of SHOW POOLS: the connections of one (database, user)
// pair. Counts are numbers of connections. A column that the PgBouncer
// version does not have leaves its field zero.
type Pool struct {
	Database string
	User     string
	// ClientsActive (cl_active): clients linked to a server connection, or
	// idle with no query waiting.
	ClientsActive int
	// ClientsWaiting (cl_waiting): clients that sent a query and wait for a
	// server connection, e.g. while the database is paused.
	ClientsWaiting int
	// ServersActive (sv_active): server connections linked to a client; in
	// transaction pooling, a transaction in progress.
	ServersActive int
	// ServersIdle (sv_idle): server connections ready for a client.
	ServersIdle int
	// ServersUsed (sv_used): server connections idle for longer than
	// server_check_delay, which run server_check_query before reuse.
	ServersUsed int
	// ServersTested (sv_tested): server connections running
	// server_reset_query or server_check_query.
	ServersTested int
	// ServersLogin (sv_login): server connections logging in.
	ServersLogin int
	// MaxWait (maxwait, maxwait_us) is how long the oldest waiting client
	// has waited.
	MaxWait time.Duration
	// Mode (pool_mode): session, transaction or statement.
	Mode string
}

// Pools runs SHOW POOLS. Columns are read by name, since PgBouncer versions
// add and reorder them.
func (b *PgBouncer) Pools(ctx context.Context) ([]Pool, error) {
	results, err := b.show(ctx, "POOLS")
	if err != nil {
		return nil, err
	}
	pools, err := parsePools(results)
	if err != nil {
		return nil, fmt.Errorf("%s: SHOW POOLS: %w", b, err)
	}
	return pools, nil
}

func parsePools(results []*pgconn.Result) ([]Pool, error) {
	var pools []Pool
	for _, r := range showRows(results) {
		p := Pool{
			Database:       r.text("database"),
			User:           r.text("user"),
			ClientsActive:  r.int("cl_active"),
			ClientsWaiting: r.int("cl_waiting"),
			ServersActive:  r.int("sv_active"),
			ServersIdle:    r.int("sv_idle"),
			ServersUsed:    r.int("sv_used"),
			ServersTested:  r.int("sv_tested"),
			ServersLogin:   r.int("sv_login"),
			MaxWait:        time.Duration(r.int("maxwait"))*time.Second + time.Duration(r.int("maxwait_us"))*time.Microsecond,
			Mode:           r.text("pool_mode"),
		}
		if r.err != nil {
			return nil, r.err
		}
		pools = append(pools, p)
	}
	return pools, nil
}

// Database is one row of SHOW DATABASES: an entry of [databases] as
// PgBouncer currently uses it.
type Database struct {
	// Name is the name clients connect to.
	Name string
	// Host is empty for the default Unix socket.
	Host string
	Port int
	// DBName (column database) is the database on the server.
	DBName string
	// CurrentConnections counts server connections of all its pools.
	CurrentConnections int
	Paused             bool
	Disabled           bool
}

// Databases runs SHOW DATABASES, reading columns by name.
func (b *PgBouncer) Databases(ctx context.Context) ([]Database, error) {
	results, err := b.show(ctx, "DATABASES")
	if err != nil {
		return nil, err
	}
	dbs, err := parseDatabases(results)
	if err != nil {
		return nil, fmt.Errorf("%s: SHOW DATABASES: %w", b, err)
	}
	return dbs, nil
}

func parseDatabases(results []*pgconn.Result) ([]Database, error) {
	var dbs []Database
	for _, r := range showRows(results) {
		d := Database{
			Name:               r.text("name"),
			Host:               r.text("host"),
			Port:               r.int("port"),
			DBName:             r.text("database"),
			CurrentConnections: r.int("current_connections"),
			Paused:             r.int("paused") != 0,
			Disabled:           r.int("disabled") != 0,
		}
		if r.err != nil {
			return nil, r.err
		}
		dbs = append(dbs, d)
	}
	return dbs, nil
}

// Database returns the SHOW DATABASES row of the [databases] entry name,
// nil when there is none.
func (b *PgBouncer) Database(ctx context.Context, name string) (*Database, error) {
	dbs, err := b.Databases(ctx)
	if err != nil {
		return nil, err
	}
	for i := range dbs {
		if dbs[i].Name == name {
			return &dbs[i], nil
		}
	}
	return nil, nil
}

func (b *PgBouncer) connect(ctx context.Context) (*pgconn.PgConn, error) {
	conn, err := pgconn.ConnectConfig(ctx, b.config.Copy())
	if err != nil {
		return nil, fmt.Errorf("%s: connect to the admin console: %w", b, err)
	}
	return conn, nil
}

// closeConn closes a console connection, on a context of its own: the
// caller's may have ended, which is often why the connection is closed.
func closeConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

func (b *PgBouncer) exec(ctx context.Context, command string) error {
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, command).ReadAll(); err != nil {
		return fmt.Errorf("%s: %s: %w", b, command, err)
	}
	return nil
}

// showRow is one row of a SHOW command, by column name. Values are text:
// the simple protocol returns every column in text format.
type showRow struct {
	cols map[string]string
	err  error
}

func (b *PgBouncer) show(ctx context.Context, what string) ([]*pgconn.Result, error) {
	conn, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	return b.showOn(ctx, conn, what)
}

// showOn runs SHOW what on an open console connection.
func (b *PgBouncer) showOn(ctx context.Context, conn *pgconn.PgConn, what string) ([]*pgconn.Result, error) {
	results, err := conn.Exec(ctx, "SHOW "+what).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: SHOW %s: %w", b, what, err)
	}
	return results, nil
}

func showRows(results []*pgconn.Result) []*showRow {
	var rows []*showRow
	for _, res := range results {
		for _, values := range res.Rows {
			r := &showRow{cols: make(map[string]string, len(values))}
			for i, fd := range res.FieldDescriptions {
				if i < len(values) && values[i] != nil {
					r.cols[fd.Name] = string(values[i])
				}
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func (r *showRow) text(name string) string { return r.cols[name] }

func (r *showRow) int(name string) int {
	v, ok := r.cols[name]
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("column %s: %q is not an integer", name, v)
	}
	return n
}

// quoteIdent quotes a database name for a console command, whose argument
// is either [0-9a-z_]+ or a double-quoted name with "" for a quote.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// Setting returns the current value of one setting (SHOW CONFIG).
func (b *PgBouncer) Setting(ctx context.Context, name string) (string, error) {
	results, err := b.show(ctx, "CONFIG")
	if err != nil {
		return "", err
	}
	for _, r := range showRows(results) {
		if r.text("key") == name {
			return r.text("value"), nil
		}
	}
	return "", fmt.Errorf("%s: SHOW CONFIG has no setting %s", b, name)
}

// Set changes a setting on the console (SET name = value) until the next
// RELOAD or restart. value is sent as a quoted string.
func (b *PgBouncer) Set(ctx context.Context, name, value string) error {
	if !entryName.MatchString(name) {
		return fmt.Errorf("%s: %q is not a setting name", b, name)
	}
	return b.exec(ctx, "SET "+name+" = '"+strings.ReplaceAll(value, "'", "''")+"'")
}

// ClientsWaitingError reports clients of a database still waiting for a
// server connection when [PgBouncer.WaitNoClientWaiting] gave up.
type ClientsWaitingError struct {
	PgBouncer string
	Database  string
	// Waiting is the number of waiting clients (cl_waiting) and MaxWait
	// how long the oldest had waited, at the last SHOW POOLS.
	Waiting int
	MaxWait time.Duration
	Cause   error
}

func (e *ClientsWaitingError) Error() string {
	return fmt.Sprintf("%s: %d clients of database %s still wait for a server connection, the oldest for %s: %v",
		e.PgBouncer, e.Waiting, e.Database, e.MaxWait.Round(time.Millisecond), e.Cause)
}

func (e *ClientsWaitingError) Unwrap() error { return e.Cause }

// WaitNoClientWaiting waits until no client of db waits for a server
// connection: cl_waiting 0 in every pool of db (see watchPools). After a
// RESUME that is the moment the clients the pause queued, and those that
// queued behind them, have all been given a server connection. When ctx
// ends first it returns a *ClientsWaitingError.
func (b *PgBouncer) WaitNoClientWaiting(ctx context.Context, db string, interval time.Duration) error {
	last, err := b.watchPools(ctx, db, interval, func(p Pool) int { return p.ClientsWaiting })
	if err == nil || last == nil {
		return err
	}
	waiting := &ClientsWaitingError{PgBouncer: b.String(), Database: db, Cause: err}
	for _, p := range last {
		waiting.Waiting += p.ClientsWaiting
		waiting.MaxWait = max(waiting.MaxWait, p.MaxWait)
	}
	return waiting
}

// waitDrained waits until no server connection of db is linked to a client
// (SHOW POOLS sv_active 0 in every pool of db): what a PAUSE that completed
// guarantees, for a database found paused by an earlier run.
func (b *PgBouncer) waitDrained(ctx context.Context, db string) error {
	last, err := b.watchPools(ctx, db, 10*time.Millisecond, func(p Pool) int { return p.ServersActive })
	if err == nil || last == nil {
		return err
	}
	active := 0
	for _, p := range last {
		active += p.ServersActive
	}
	return fmt.Errorf("%s: database %s is paused but %d server connections stay active: %w", b, db, active, err)
}

// watchPools reads SHOW POOLS every interval until count, summed over the
// pools of db, is 0. It reads on one console connection: a login per look
// would cost PgBouncer, which serves clients on one thread, more than the
// look. When ctx ends first it returns the pools of db of the last read
// and ctx's cause; last is nil with any other error.
func (b *PgBouncer) watchPools(ctx context.Context, db string, interval time.Duration, count func(Pool) int) (last []Pool, err error) {
	conn, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	for {
		results, err := b.showOn(ctx, conn, "POOLS")
		if err != nil {
			if last != nil && ctx.Err() != nil {
				return last, context.Cause(ctx)
			}
			return nil, err
		}
		pools, err := parsePools(results)
		if err != nil {
			return nil, fmt.Errorf("%s: SHOW POOLS: %w", b, err)
		}
		last = last[:0]
		left := 0
		for _, p := range pools {
			if p.Database == db {
				last = append(last, p)
				left += count(p)
			}
		}
		if left == 0 {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return last, context.Cause(ctx)
		case <-time.After(interval):
		}
	}
}
