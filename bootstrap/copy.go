// Package bootstrap makes a target ready for broker2pg: `pgtandem init`.
//
// # Copy mode
//
// For an empty target. The schema is copied with pg_dump in two steps: the
// tables first (pre-data), the indexes, constraints and triggers after the
// data (post-data, restored in parallel), because building an index once
// over all rows is much cheaper than maintaining it row by row. Between the
// two, the publication and the slot are created with an exported snapshot,
// every table is copied inside that snapshot with COPY streamed from source
// to target (no temporary files, --jobs tables at once), and sequences are
// set from it. The slot's consistent point is then recorded in the target's
// pgtandem.apply_progress as the handoff: pg2broker streams from the slot,
// and broker2pg applies exactly what came after the copy, no gap, nothing
// twice.
//
// # Interrupted runs
//
// A failed init drops the slot it created, so that no slot is left holding
// WAL, and says so; the target then holds a partial copy, which a second run
// refuses unless told --allow-nonempty (after the operator truncated or
// recreated it).
package bootstrap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// Config is what one init needs.
type Config struct {
	// Source is the source cluster's name: the slot is pgtandem_<Source>
	// and the handoff is recorded under it.
	Source    string
	SourceDSN string
	TargetDSN string
	// Topic, or TopicPrefix-pg<source major>, is recorded with the handoff.
	Topic       string
	TopicPrefix string
	// Jobs is how many tables are copied at once, and the parallelism of the
	// post-data restore.
	Jobs int
	// SplitRows: a table with more rows (by the planner's estimate) is copied
	// in key ranges of about this many rows, several at once; 0 never splits.
	SplitRows int
	// AllowNonEmpty copies into tables that already hold rows.
	AllowNonEmpty bool
	// PgDump is the pg_dump to use; empty finds one of the source's major
	// or newer.
	PgDump string
	// Progress, when set, is told the bytes copied so far and the estimated
	// total (the tables' on-disk size) while the copy runs.
	Progress func(done, total int64)
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Source == "" || c.SourceDSN == "" || c.TargetDSN == "" {
		errs = append(errs, errors.New("init: source name, source DSN and target DSN are required"))
	}
	if c.Topic == "" && c.TopicPrefix == "" {
		errs = append(errs, errors.New("init: neither a topic nor a topic prefix is set"))
	}
	if c.Jobs < 1 {
		errs = append(errs, fmt.Errorf("init: jobs %d must be positive", c.Jobs))
	}
	return errors.Join(errs...)
}

// Result is what init did.
type Result struct {
	HandoffLSN pglogrepl.LSN
	Tables     []TableCopy
	Took       time.Duration
}

// TableCopy is one copied table.
type TableCopy struct {
	Table string
	Rows  int64
	Bytes int64
	Took  time.Duration
	// Parts is how many key ranges the table was copied in.
	Parts int
}

// NotEmptyError lists target tables that already hold rows.
type NotEmptyError struct {
	Tables []string
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("init: target tables already hold rows: %s; copy mode is for an empty target (truncate them, or pass --allow-nonempty)", strings.Join(e.Tables, ", "))
}

// SlotExistsError reports a slot left by an earlier init or in use by
// pg2broker: init never replaces one.
type SlotExistsError struct {
	Slot string
}

func (e *SlotExistsError) Error() string {
	return fmt.Sprintf("init: slot %s already exists on the source (an earlier init, or pg2broker running): if it is stale, drop it with SELECT pg_drop_replication_slot('%s') and run init again", e.Slot, e.Slot)
}

// Copy runs copy mode. Progress lines go to log.
func Copy(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	started := time.Now()
	src, err := pgx.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return nil, fmt.Errorf("init: connect to source: %w", err)
	}
	defer src.Close(context.Background())
	dst, err := pgx.Connect(ctx, cfg.TargetDSN)
	if err != nil {
		return nil, fmt.Errorf("init: connect to target: %w", err)
	}
	defer dst.Close(context.Background())

	// Checks first, creating nothing: the publication comes after the
	// schema is on the target and the tools are known to work.
	info, err := pg2broker.PrepareSource(ctx, src, false)
	var pe *pg2broker.PreflightError
	if err != nil && !(errors.As(err, &pe) && pe.Check == "publication") {
		return nil, err
	}
	slot := pg2broker.SlotName(cfg.Source)
	var exists bool
	if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists); err != nil {
		return nil, fmt.Errorf("init: read slots: %w", err)
	}
	if exists {
		return nil, &SlotExistsError{Slot: slot}
	}
	tools, err := findDumpTools(ctx, cfg.PgDump, info.Major)
	if err != nil {
		return nil, err
	}
	topic := cfg.Topic
	if topic == "" {
		topic = cfg.TopicPrefix + "-pg" + strconv.Itoa(info.Major)
	}

	dumpDir, err := os.MkdirTemp("", "pgtandem-init-schema-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dumpDir)
	log.Info("dumping the schema", "pg_dump", tools.pgDump)
	if err := runTool(ctx, tools.pgDump, cfg.SourceDSN, "--schema-only", "--format=directory", "--file="+dumpDir+"/schema",
		"--no-publications", "--no-subscriptions", "--exclude-schema=pgtandem"); err != nil {
		return nil, fmt.Errorf("init: pg_dump of the source schema: %w", err)
	}
	if err := runTool(ctx, tools.pgRestore, cfg.TargetDSN, "--section=pre-data", "--exit-on-error", dumpDir+"/schema"); err != nil {
		return nil, fmt.Errorf("init: restore the tables on the target (pre-data): %w", err)
	}
	tables, err := listTables(ctx, src)
	if err != nil {
		return nil, err
	}
	if !cfg.AllowNonEmpty {
		if err := checkEmpty(ctx, dst, tables); err != nil {
			return nil, err
		}
	}
	if _, err := pg2broker.PrepareSource(ctx, src, true); err != nil {
		return nil, err
	}

	repl, err := replicationConn(ctx, cfg.SourceDSN)
	if err != nil {
		return nil, err
	}
	defer repl.Close(context.Background())
	created, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, fmt.Errorf("init: create slot %s: %w", slot, err)
	}
	consistent, err := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err != nil {
		return nil, err
	}
	log.Info("created slot with an exported snapshot", "slot", slot, "consistent_point", consistent, "snapshot", created.SnapshotName)
	// From here on a failure must not leave the slot holding WAL.
	ok := false
	defer func() {
		if ok {
			return
		}
		if _, err := src.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
			log.Error("init failed and could not drop its slot: drop it by hand, it holds WAL", "slot", slot, "err", err)
			return
		}
		log.Warn("init failed: dropped its slot; the target holds a partial copy, truncate it before running init again", "slot", slot)
	}()
	// The exported snapshot lives as long as the replication connection is
	// idle and open: the copy below happens inside it.
	res := &Result{HandoffLSN: consistent}
	parts, err := splitTables(ctx, src, tables, cfg.SplitRows, info.Major)
	if err != nil {
		return nil, err
	}
	if res.Tables, err = copyTables(ctx, cfg, created.SnapshotName, parts, log); err != nil {
		return nil, err
	}
	if err := copySequences(ctx, cfg, created.SnapshotName, dst); err != nil {
		return nil, err
	}
	// The snapshot is no longer needed; closing ends it.
	repl.Close(ctx)
	log.Info("building indexes, constraints and triggers (post-data)", "jobs", cfg.Jobs)
	if err := runTool(ctx, tools.pgRestore, cfg.TargetDSN, "--section=post-data", "--exit-on-error", "--jobs="+strconv.Itoa(cfg.Jobs), dumpDir+"/schema"); err != nil {
		return nil, fmt.Errorf("init: restore indexes and constraints on the target (post-data): %w", err)
	}
	// Every transaction that committed before the consistent point is in
	// the snapshot; one that commits right at it is decoded, so the handoff
	// is the position just before.
	if err := broker2pg.RecordHandoff(ctx, dst, cfg.Source, topic, info.SystemID, consistent-1); err != nil {
		return nil, err
	}
	ok = true
	res.Took = time.Since(started)
	return res, nil
}

// sourceTable is a table whose rows are copied: every table with storage
// (partitions individually, their roots hold none).
type sourceTable struct {
	qualified string
	id        string
	size      int64 // on disk, an estimate of the bytes COPY moves
	// columns lists the stored columns (generated ones are left to the
	// target to compute); where selects one key range of a table split for
	// a parallel copy, empty for the whole table.
	columns string
	where   string
}

func listTables(ctx context.Context, conn *pgx.Conn) ([]sourceTable, error) {
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname), n.nspname || '.' || c.relname, pg_table_size(c.oid)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtandem') AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY c.relpages DESC`)
	if err != nil {
		return nil, fmt.Errorf("init: list source tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (sourceTable, error) {
		var t sourceTable
		err := r.Scan(&t.qualified, &t.id, &t.size)
		return t, err
	})
}

func checkEmpty(ctx context.Context, conn *pgx.Conn, tables []sourceTable) error {
	var full []string
	for _, t := range tables {
		var has bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.qualified+`)`).Scan(&has); err != nil {
			return fmt.Errorf("init: check that %s is empty on the target: %w", t.id, err)
		}
		if has {
			full = append(full, t.id)
		}
	}
	if len(full) > 0 {
		return &NotEmptyError{Tables: full}
	}
	return nil
}

// splitTables fills in the columns of every table and cuts tables of more
// than splitRows rows into ranges of their first key column, taken from the
// planner's histogram, so that one large table is copied by several
// sessions at once. A table without key or statistics stays whole.
func splitTables(ctx context.Context, conn *pgx.Conn, tables []sourceTable, splitRows int, major int) ([]sourceTable, error) {
	generated := "false"
	if major >= 12 {
		generated = "a.attgenerated <> ''"
	}
	var out []sourceTable
	for _, t := range tables {
		var cols []string
		var estimate float64
		var keyCol, keyType *string
		var hist []string
		err := conn.QueryRow(ctx, `
			SELECT array(SELECT quote_ident(a.attname) FROM pg_attribute a
			             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND NOT (`+generated+`)
			             ORDER BY a.attnum),
			       greatest(c.reltuples, 0),
			       (SELECT quote_ident(a.attname) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			         WHERE i.indrelid = c.oid AND i.indisprimary),
			       (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			         WHERE i.indrelid = c.oid AND i.indisprimary),
			       coalesce((SELECT s.histogram_bounds::text::text[] FROM pg_stats s, pg_index i, pg_attribute a
			         WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid AND a.attnum = i.indkey[0]
			           AND s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname), '{}')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::regclass`, t.qualified).
			Scan(&cols, &estimate, &keyCol, &keyType, &hist)
		if err != nil {
			return nil, fmt.Errorf("init: describe %s: %w", t.id, err)
		}
		t.columns = strings.Join(cols, ", ")
		if splitRows <= 0 || estimate <= float64(splitRows) || keyCol == nil || len(hist) < 3 {
			out = append(out, t)
			continue
		}
		step := max(1, int(float64(splitRows)/(estimate/float64(len(hist)-1))))
		var bounds []string
		for i := step; i < len(hist)-1; i += step {
			bounds = append(bounds, quoteLiteral(hist[i])+"::"+*keyType)
		}
		for i := 0; i <= len(bounds); i++ {
			part := t
			var conds []string
			if i > 0 {
				conds = append(conds, *keyCol+" >= "+bounds[i-1])
			}
			if i < len(bounds) {
				conds = append(conds, *keyCol+" < "+bounds[i])
			}
			part.where = strings.Join(conds, " AND ")
			part.size = t.size / int64(len(bounds)+1)
			out = append(out, part)
		}
	}
	return out, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// copyTables streams every table from the source snapshot into the target,
// Jobs at once, the largest first so the longest copy starts earliest.
func copyTables(ctx context.Context, cfg Config, snapshot string, tables []sourceTable, log *slog.Logger) ([]TableCopy, error) {
	results := make([]TableCopy, len(tables))
	var copied, bytes atomic.Int64
	var total int64
	for _, t := range tables {
		total += t.size
	}
	if cfg.Progress != nil {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					cfg.Progress(bytes.Load(), max(total, bytes.Load()))
					return
				case <-tick.C:
					cfg.Progress(bytes.Load(), max(total, bytes.Load()))
				}
			}
		}()
		defer func() { close(stop); <-done }()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Jobs)
	for i, t := range tables {
		g.Go(func() error {
			r, err := copyTable(gctx, cfg, snapshot, t, &bytes)
			if err != nil {
				return err
			}
			results[i] = r
			log.Info("copied", "table", t.id, "rows", r.Rows, "MB", fmt.Sprintf("%.1f", float64(r.Bytes)/1e6),
				"MB/s", fmt.Sprintf("%.1f", float64(r.Bytes)/1e6/max(r.Took.Seconds(), 0.001)), "done", fmt.Sprintf("%d/%d", copied.Add(1), len(tables)))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// A split table was copied in parts; report it once.
	var merged []TableCopy
	index := map[string]int{}
	for _, r := range results {
		i, ok := index[r.Table]
		if !ok {
			index[r.Table] = len(merged)
			merged = append(merged, r)
			continue
		}
		merged[i].Rows += r.Rows
		merged[i].Bytes += r.Bytes
		merged[i].Took = max(merged[i].Took, r.Took)
		merged[i].Parts++
	}
	return merged, nil
}

func copyTable(ctx context.Context, cfg Config, snapshot string, t sourceTable, total *atomic.Int64) (TableCopy, error) {
	started := time.Now()
	res := TableCopy{Table: t.id, Parts: 1}
	src, err := pgconn.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: connect to source: %w", t.id, err)
	}
	defer src.Close(context.Background())
	dst, err := pgconn.Connect(ctx, cfg.TargetDSN)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: connect to target: %w", t.id, err)
	}
	defer dst.Close(context.Background())
	if err := src.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '`+snapshot+`'`).Close(); err != nil {
		return res, fmt.Errorf("init: copy %s: enter the slot's snapshot %s: %w", t.id, snapshot, err)
	}
	// Rows are loaded as the source holds them: no triggers or foreign key
	// checks fire (constraints come with post-data anyway).
	if err := dst.Exec(ctx, `SET session_replication_role = replica; SET synchronous_commit = off`).Close(); err != nil {
		return res, err
	}
	pr, pw := io.Pipe()
	// The source hands over one row per write; batching them keeps the pipe
	// from switching goroutines per row and the target from getting one
	// CopyData message per row.
	buffered := bufio.NewWriterSize(pw, 256<<10)
	counter := &countingWriter{w: buffered, total: total}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		out := `COPY ` + t.qualified + ` (` + t.columns + `) TO STDOUT`
		if t.where != "" {
			out = `COPY (SELECT ` + t.columns + ` FROM ` + t.qualified + ` WHERE ` + t.where + `) TO STDOUT`
		}
		_, err := src.CopyTo(gctx, counter, out)
		if err == nil {
			err = buffered.Flush()
		}
		pw.CloseWithError(err)
		if err != nil {
			return fmt.Errorf("init: copy %s out of the source: %w", t.id, err)
		}
		return nil
	})
	g.Go(func() error {
		tag, err := dst.CopyFrom(gctx, pr, `COPY `+t.qualified+` (`+t.columns+`) FROM STDIN`)
		if err != nil {
			pr.CloseWithError(err)
			return fmt.Errorf("init: copy %s into the target: %w", t.id, err)
		}
		res.Rows = tag.RowsAffected()
		return nil
	})
	if err := g.Wait(); err != nil {
		return res, err
	}
	if err := src.Exec(ctx, `COMMIT`).Close(); err != nil {
		return res, err
	}
	res.Bytes = counter.n.Load()
	res.Took = time.Since(started)
	return res, nil
}

// countingWriter counts what passes, for the table and for the whole copy.
type countingWriter struct {
	w     io.Writer
	n     atomic.Int64
	total *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	c.total.Add(int64(n))
	return n, err
}

// copySequences sets every target sequence to its value in the snapshot.
func copySequences(ctx context.Context, cfg Config, snapshot string, dst *pgx.Conn) error {
	src, err := pgx.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return fmt.Errorf("init: sequences: connect to source: %w", err)
	}
	defer src.Close(context.Background())
	tx, err := src.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SET TRANSACTION SNAPSHOT '`+snapshot+`'`); err != nil {
		return fmt.Errorf("init: sequences: enter the snapshot: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences WHERE schemaname NOT IN ('pgtandem')`)
	if err != nil {
		return fmt.Errorf("init: list sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("init: list sequences: %w", err)
	}
	for _, seq := range seqs {
		var last int64
		var called bool
		if err := tx.QueryRow(ctx, `SELECT last_value, is_called FROM `+seq).Scan(&last, &called); err != nil {
			return fmt.Errorf("init: read sequence %s: %w", seq, err)
		}
		if _, err := dst.Exec(ctx, `SELECT setval($1::regclass, $2, $3)`, seq, last, called); err != nil {
			return fmt.Errorf("init: set sequence %s on the target: %w", seq, err)
		}
	}
	return nil
}

func replicationConn(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("init: parse source DSN: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("init: replication connection to source: %w", err)
	}
	return conn, nil
}

var keywordPassword = regexp.MustCompile(`(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// runTool runs pg_dump or pg_restore against dsn, the password handed over
// in PGPASSWORD rather than on a command line every user can read.
func runTool(ctx context.Context, tool, dsn string, args ...string) error {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return err
	}
	conn := dsn
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		u.User = url.User(u.User.Username())
		q := u.Query()
		q.Del("password")
		u.RawQuery = q.Encode()
		conn = u.String()
	} else {
		conn = keywordPassword.ReplaceAllString(dsn, "")
	}
	cmd := exec.CommandContext(ctx, tool, append([]string{"--dbname=" + conn}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+cfg.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, strings.TrimSpace(string(out)))
	}
	return nil
}
