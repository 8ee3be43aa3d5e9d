package switchover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgtandem/pgtandem/cursor"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// ApplicationName is what pgtandem's switch sessions show in
// pg_stat_activity. Sessions whose application_name starts with "pgtandem"
// are never terminated by the database fence.
const ApplicationName = "pgtandem switch"

// markerPoll is how often the switch looks for a marker on the other
// cluster: a query costs well under a millisecond, and every poll interval
// is write pause.
const markerPoll = 2 * time.Millisecond

// session is the switch's own connection to one cluster. It is never
// fenced: default_transaction_read_only is off at startup, which overrides
// the database fence.
type session struct {
	name    string
	cluster Cluster
	conn    *pgx.Conn
}

func connect(ctx context.Context, c Cluster) (*session, error) {
	cfg, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: parse DSN: %w", c.Name, err)
	}
	catalog.PinTextSettings(&cfg.Config)
	cfg.RuntimeParams["application_name"] = ApplicationName
	cfg.RuntimeParams["default_transaction_read_only"] = "off"
	// The switch never waits long for a lock: a lock wait is write pause.
	cfg.RuntimeParams["lock_timeout"] = "2s"
	// A deadline that ends a query must leave the session usable for the
	// undo: cancel the query (a cancel request) rather than close the
	// connection, pgx's default.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: time.Second}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: connect: %w", c.Name, err)
	}
	s := &session{name: c.Name, cluster: c, conn: conn}
	if err := catalog.Migrate(ctx, conn); err != nil {
		s.close()
		return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
	}
	return s, nil
}

// reopen replaces a session whose connection was closed (a query that did
// not answer its cancel request in time): the undo must still run.
func (s *session) reopen(ctx context.Context) error {
	if !s.conn.IsClosed() {
		return nil
	}
	fresh, err := connect(ctx, s.cluster)
	if err != nil {
		return err
	}
	s.conn = fresh.conn
	return nil
}

func (s *session) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.conn.Close(ctx)
}

// lockKey is the advisory lock a switch process holds on both clusters for
// its whole run.
const lockKey = `hashtext('pgtandem switch')`

func (s *session) tryLock(ctx context.Context) (bool, error) {
	var ok bool
	if err := s.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`).Scan(&ok); err != nil {
		return false, fmt.Errorf("cluster %s: take the switch lock: %w", s.name, err)
	}
	return ok, nil
}

// fenced tells whether the database fence is set on the cluster's database.
func (s *session) fenced(ctx context.Context) (bool, error) {
	var on bool
	err := s.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_db_role_setting r JOIN pg_database d ON d.oid = r.setdatabase
		WHERE d.datname = current_database() AND r.setrole = 0 AND 'default_transaction_read_only=on' = ANY (r.setconfig))`).Scan(&on)
	if err != nil {
		return false, fmt.Errorf("cluster %s: read the database fence: %w", s.name, err)
	}
	return on, nil
}

// databaseSQL is the database the session is connected to, quoted: pgx
// resolved the DSN's default already, so naming it costs no round trip in
// the pause.
func (s *session) databaseSQL() string { return pgx.Identifier{s.conn.Config().Database}.Sanitize() }

// fence makes the database read-only for new sessions and terminates its
// client sessions that are not pgtandem's, so that none keeps writing with
// the setting it started with, and waits until those that could still
// commit are gone; it returns how many it terminated. With a marker id it
// then writes that marker (see writeMarker) and returns the WAL position as
// it was written: in the same statement, after the terminations, when none
// of the ended sessions could still commit, which saves the write pause a
// round trip; otherwise once they are gone.
//
// The read-only default and the terminations go in one round trip, the
// ALTER committed first: a session that starts after the terminations
// (a client bypassing the pooler reconnecting) is read-only. Behind
// PgBouncer, call it only once the PAUSE completed: a server connection
// PgBouncer opened between the ALTER and the PAUSE taking effect would fail
// its clients' writes, and, outliving an undo that resumes PgBouncer before
// it lifts the fence, keep failing them after it.
func (s *session) fence(ctx context.Context, marker string) (int, pglogrepl.LSN, error) {
	var pids []int32
	var terminated int
	var lsn pglogrepl.LSN
	b := s.fenceBatch(marker, func(row pgx.Row) error { return row.Scan(&pids, &terminated, &lsn) })
	if err := s.conn.SendBatch(ctx, b).Close(); err != nil {
		return 0, 0, fmt.Errorf("cluster %s: fence (read-only default, client sessions terminated): %w", s.name, err)
	}
	if len(pids) == 0 {
		return terminated, lsn, nil // the marker, if any, is written
	}
	for {
		var left int
		if err := s.conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY ($1)`, pids).Scan(&left); err != nil {
			return 0, 0, fmt.Errorf("cluster %s: fence: wait for terminated sessions: %w", s.name, err)
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("cluster %s: fence: %d terminated sessions still running: %w", s.name, left, context.Cause(ctx))
		case <-time.After(markerPoll):
		}
	}
	if marker != "" {
		var err error
		if lsn, err = s.writeMarker(ctx, marker); err != nil {
			return 0, 0, err
		}
	}
	return terminated, lsn, nil
}

// fenceBatch is session.fence's round trip; scan reads the row of the
// terminations (their pids that were not idle, how many, the WAL position).
func (s *session) fenceBatch(marker string, scan func(pgx.Row) error) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`ALTER DATABASE ` + s.databaseSQL() + ` SET default_transaction_read_only = on`)
	b.Queue(`COMMIT`)
	// pg_terminate_backend only signals: a session in the middle of a
	// COMMIT could still commit after the marker, so such sessions are
	// waited for, polling: its timeout argument (PostgreSQL 14+) checks
	// only every 100 ms, which the benchmark showed as pause. A session
	// that was idle (outside a transaction, waiting for a command) cannot:
	// waiting for a command it handles the signal at once, and a command
	// it had just read reaches an interrupt check in the executor before
	// it could commit a change. Not waiting for those, usually PgBouncer's
	// idle server connections, shortens the pause by their exit (3-5 ms
	// each on the benchmark's machine). A session whose state is unknown
	// (track_activities off) is waited for.
	// OFFSET 0 keeps the filter below the call: without it the planner
	// pushes pg_terminate_backend into the scan of pg_stat_get_activity, and
	// it would end every process of the cluster the filter was meant to
	// spare (other databases, walsenders, the launcher).
	//
	// The CTE that ends the sessions is evaluated once (it is volatile),
	// before the marker's INSERT, which reads it: the marker commits with
	// the statement, after every signal was sent.
	b.Queue(`WITH ended AS (
		SELECT pid, coalesce(state, '') = 'idle' AS idle FROM (SELECT pid, state FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
			  AND coalesce(application_name, '') NOT LIKE 'pgtandem%' OFFSET 0) clients WHERE pg_terminate_backend(pid)
	), marker AS (
		INSERT INTO pgtandem.switch_marker (marker_id, written_on) SELECT $1::text, $2::text
		WHERE $1::text <> '' AND NOT EXISTS (SELECT 1 FROM ended WHERE NOT idle)
		ON CONFLICT (marker_id) DO NOTHING
	) SELECT coalesce(array_agg(pid) FILTER (WHERE NOT idle), '{}'), count(*), pg_current_wal_lsn() FROM ended`, marker, s.name).
		QueryRow(scan)
	return b
}

// unfenceSQL lifts the database fence; new sessions may write again.
func (s *session) unfenceSQL() string {
	return `ALTER DATABASE ` + s.databaseSQL() + ` RESET default_transaction_read_only`
}

// unfence lifts the database fence.
func (s *session) unfence(ctx context.Context) error {
	if _, err := s.conn.Exec(ctx, s.unfenceSQL()); err != nil {
		return fmt.Errorf("cluster %s: unfence: %w", s.name, err)
	}
	return nil
}

// writeCut commits the switch's cut row and, with unfence, lifts the
// database fence in the same transaction: one round trip, one commit,
// inside the write pause. The commit is synchronous whatever the cluster's
// setting: broker2pg commits asynchronously, so this flush is what makes
// the marker's transaction, and every one applied before it, durable on
// the target before anything can write there.
func (s *session) writeCut(ctx context.Context, cut *cursor.Mark, unfence bool) error {
	if err := s.conn.SendBatch(ctx, s.cutBatch(cut, unfence)).Close(); err != nil {
		return fmt.Errorf("cluster %s: write the cut row of switch %s (and lift the fence): %w", s.name, cut.SwitchID, err)
	}
	return nil
}

// cutBatch is writeCut's transaction.
func (s *session) cutBatch(cut *cursor.Mark, unfence bool) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SET LOCAL synchronous_commit = on`)
	cut.Queue(b)
	if unfence {
		b.Queue(s.unfenceSQL())
	}
	b.Queue(`COMMIT`)
	return b
}

// prepare prepares the statements of batches on the session ahead of the
// write pause. pgx prepares a statement new to the connection in a round
// trip of its own before it sends it (and the switch's connections are new
// for each switch): prepared, the fence's and the cut's statements cost the
// pause one round trip each, not two.
func (s *session) prepare(ctx context.Context, batches ...*pgx.Batch) error {
	for _, b := range batches {
		for _, q := range b.QueuedQueries {
			// Named by their text, pgx sends them by name (see pgx.Conn.Prepare).
			if _, err := s.conn.Prepare(ctx, q.SQL, q.SQL); err != nil {
				return fmt.Errorf("cluster %s: prepare the switch's statements: %w", s.name, err)
			}
		}
	}
	return nil
}

// writeMarker commits a row in pgtandem.switch_marker and returns the
// cluster's WAL position as it was written, in one round trip (one
// implicit transaction: the marker's commit record comes just after).
func (s *session) writeMarker(ctx context.Context, id string) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	if err := s.conn.SendBatch(ctx, s.markerBatch(id, &lsn)).Close(); err != nil {
		return 0, fmt.Errorf("cluster %s: write marker %s: %w", s.name, id, err)
	}
	return lsn, nil
}

// markerBatch is writeMarker's round trip; lsn receives the position.
func (s *session) markerBatch(id string, lsn *pglogrepl.LSN) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO pgtandem.switch_marker (marker_id, written_on) VALUES ($1, $2) ON CONFLICT (marker_id) DO NOTHING`, id, s.name)
	b.Queue(`SELECT pg_current_wal_lsn()`).QueryRow(func(row pgx.Row) error { return row.Scan(lsn) })
	return b
}

// markerArrival is what the target shows once a marker is applied: the
// apply's position stored in the same transaction.
type markerArrival struct {
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
	MessageID  string
}

// waitMarker polls until marker id is in the cluster, applied from source,
// or ctx ends. Sequences that arrive on seqs before the marker does are set
// in the cluster with the next poll, in the same round trip (see
// setSequencesSQL); set tells whether they were. A nil seqs sets nothing.
func (s *session) waitMarker(ctx context.Context, id, source string, seqs <-chan []sequence) (a markerArrival, set bool, err error) {
	for {
		var pending []sequence
		if !set {
			select {
			case pending = <-seqs:
			default:
			}
		}
		br := s.conn.SendBatch(ctx, lookBatch(id, source, pending))
		if pending != nil {
			if _, err = br.Exec(); err != nil {
				_ = br.Close()
				return a, false, fmt.Errorf("cluster %s: set sequences: %w", s.name, err)
			}
			set = true
		}
		err = br.QueryRow().Scan(&a.CommitLSN, &a.CommitTime, &a.MessageID)
		if closeErr := br.Close(); err == nil {
			err = closeErr
		}
		if err == nil {
			return a, set, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return a, set, fmt.Errorf("cluster %s: look for marker %s: %w", s.name, id, err)
		}
		select {
		case <-ctx.Done():
			return a, set, fmt.Errorf("cluster %s: marker %s not applied from %s: %w", s.name, id, source, context.Cause(ctx))
		case <-time.After(markerPoll):
		}
	}
}

// lookBatch is one look for marker id applied from source, after the
// setval of pending when there are any.
func lookBatch(id, source string, pending []sequence) *pgx.Batch {
	b := &pgx.Batch{}
	if pending != nil {
		b.Queue(setSequencesSQL, sequenceArgs(pending)...)
	}
	b.Queue(`SELECT p.commit_lsn, coalesce(p.commit_time, m.written_at), coalesce(p.message_id, '') FROM pgtandem.switch_marker m
		LEFT JOIN pgtandem.apply_progress p ON p.source_cluster = $2 WHERE m.marker_id = $1`, id, source)
	return b
}

// sequence is one sequence's state: nextval returns LastValue+increment
// when IsCalled, LastValue itself otherwise.
type sequence struct {
	Name      string
	LastValue int64
	IsCalled  bool
}

// listSequences returns the qualified, quoted name of every sequence of the
// database (owned by a serial, identity or standalone), in name order;
// temporary sequences belong to one client session and are left out.
func (s *session) listSequences(ctx context.Context) ([]string, error) {
	rows, err := s.conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'S' AND c.relpersistence <> 't' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: list sequences: %w", s.name, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("cluster %s: list sequences: %w", s.name, err)
	}
	return names, nil
}

// sequenceReadSQL reads last_value and is_called of every sequence in one
// statement.
func sequenceReadSQL(names []string) string {
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("SELECT %d, last_value, is_called FROM %s", i, name)
	}
	return strings.Join(parts, " UNION ALL ")
}

// readAtFence reads, in one round trip on the fenced source, every
// sequence of names and the message id of the last transaction of source
// (the target's topic) that the cluster applied, "" when none: where the
// reverse flow stands when clients move.
func (s *session) readAtFence(ctx context.Context, names []string, source string) ([]sequence, string, error) {
	var seqs []sequence
	var applied string
	if err := s.conn.SendBatch(ctx, readAtFenceBatch(names, source, &seqs, &applied)).Close(); err != nil {
		return nil, "", fmt.Errorf("cluster %s: read sequences and apply_progress of %s: %w", s.name, source, err)
	}
	return seqs, applied, nil
}

// readAtFenceBatch is readAtFence's round trip; seqs and applied receive
// what it reads.
func readAtFenceBatch(names []string, source string, seqs *[]sequence, applied *string) *pgx.Batch {
	b := &pgx.Batch{}
	if len(names) > 0 {
		b.Queue(sequenceReadSQL(names)).Query(func(rows pgx.Rows) error {
			var err error
			*seqs, err = scanSequences(rows, names)
			return err
		})
	}
	b.Queue(`SELECT coalesce(message_id, '') FROM pgtandem.apply_progress WHERE source_cluster = $1`, source).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(applied); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return nil
	})
	return b
}

// readSequences reads every sequence of names in one round trip.
func (s *session) readSequences(ctx context.Context, names []string) ([]sequence, error) {
	if len(names) == 0 {
		return nil, nil
	}
	rows, err := s.conn.Query(ctx, sequenceReadSQL(names))
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read sequences: %w", s.name, err)
	}
	out, err := scanSequences(rows, names)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read sequences: %w", s.name, err)
	}
	return out, nil
}

// scanSequences reads the rows of sequenceReadSQL(names).
func scanSequences(rows pgx.Rows, names []string) ([]sequence, error) {
	out := make([]sequence, len(names))
	var i int
	var seq sequence
	_, err := pgx.ForEachRow(rows, []any{&i, &seq.LastValue, &seq.IsCalled}, func() error {
		seq.Name = names[i]
		out[i] = seq
		return nil
	})
	return out, err
}

// setSequences sets every sequence exactly (setval with is_called) in one
// round trip.
func (s *session) setSequences(ctx context.Context, seqs []sequence) error {
	if len(seqs) == 0 {
		return nil
	}
	if _, err := s.conn.Exec(ctx, setSequencesSQL, sequenceArgs(seqs)...); err != nil {
		return fmt.Errorf("cluster %s: set sequences: %w", s.name, err)
	}
	return nil
}

// setSequencesSQL sets every sequence of sequenceArgs in one statement.
const setSequencesSQL = `SELECT count(setval(s.name::regclass, s.value, s.called)) FROM unnest($1::text[], $2::bigint[], $3::bool[]) AS s(name, value, called)`

// sequenceArgs are setSequencesSQL's arguments for seqs: names, values,
// is_called flags.
func sequenceArgs(seqs []sequence) []any {
	names, values, called := make([]string, len(seqs)), make([]int64, len(seqs)), make([]bool, len(seqs))
	for i, seq := range seqs {
		names[i], values[i], called[i] = seq.Name, seq.LastValue, seq.IsCalled
	}
	return []any{names, values, called}
}
