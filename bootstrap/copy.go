package bootstrap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"golang.org/x/sync/errgroup"
)

// Config is what one init needs.
type Config struct {
	// Source is the source cluster's name: the slot is pgtandem_<Source>
	// and the handoff is recorded under it.
	Source    string
	SourceDSN string
	TargetDSN string
	// Target is the target cluster's name, for the commands errors print.
	Target string
	// Topic, or TopicPrefix-pg<source major>, is recorded with the handoff.
	Topic       string
	TopicPrefix string
	// Jobs is how many tables are copied at once, and the parallelism of the
	// post-data restore.
	Jobs int
	// SplitRows: a table with more rows (by the planner's estimate) is copied
	// in key ranges of about this many rows, several at once; 0 never splits.
	SplitRows int
	// ExistingSchema uses the tables the target already has (created by the
	// operator, e.g. with changes for the new major) instead of restoring
	// the source's schema: init neither restores tables nor builds indexes,
	// it copies the rows. Every table of the source must exist there.
	ExistingSchema bool
	// AllowNonEmpty copies into existing tables that already hold rows
	// (ExistingSchema only); such a copy cannot be resumed, as the rows
	// init copied cannot be told from those that were there.
	AllowNonEmpty bool
	// PgDump is the pg_dump to use; empty finds one of the source's major
	// or newer.
	PgDump string
	// Progress, when set, is told how far the copy is while it runs.
	Progress func(CopyProgress)
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
	if c.AllowNonEmpty && !c.ExistingSchema {
		errs = append(errs, errors.New("init: --allow-nonempty needs --schema existing: by default init restores the tables itself, into a target that has none"))
	}
	return errors.Join(errs...)
}

// Result is what init did.
type Result struct {
	// HandoffLSN is the slot's consistent point: broker2pg applies the
	// source transactions committed from there on.
	HandoffLSN pglogrepl.LSN
	Tables     []TableCopy
	Took       time.Duration
	// Resumed is set when this run continued an interrupted one;
	// AlreadyDone when an earlier run had finished and this one did nothing.
	Resumed, AlreadyDone bool
	// TableHandoffs counts the tables copied in a later snapshot than the
	// slot's, whose changes broker2pg skips up to that snapshot.
	TableHandoffs int
}

// TableCopy is one copied table.
type TableCopy struct {
	Table string
	Rows  int64
	Bytes int64
	Took  time.Duration
	// Parts is how many key ranges the table was copied in.
	Parts int
	// Kept marks a table an earlier, interrupted run had copied.
	Kept bool
}

// NotEmptyError lists target tables that already hold rows.
type NotEmptyError struct {
	Tables []string
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("init: target tables already hold rows: %s; truncate them, or pass --allow-nonempty to copy next to those rows (such a copy cannot be resumed if it stops)", strings.Join(e.Tables, ", "))
}

// SlotExistsError reports a slot that no init recorded on the target: one of
// an older pgtandem, of clone mode, or in use by pg2broker. init never
// replaces one.
type SlotExistsError struct {
	Slot string
}

func (e *SlotExistsError) Error() string {
	return fmt.Sprintf("init: slot %s already exists on the source (an earlier init, or pg2broker running): if it is stale, drop it with SELECT pg_drop_replication_slot('%s') and run init again", e.Slot, e.Slot)
}

// Copy runs copy mode, or continues an interrupted one: the tables it had
// committed are kept, the others copied (see the package documentation).
// Progress lines go to log.
func Copy(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	started := time.Now()
	r, err := connect(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer r.close()
	st, err := r.resumable(ctx)
	if err != nil {
		return nil, err
	}
	if st != nil && st.phase == phaseDone {
		return r.alreadyDone(ctx, st)
	}
	if !cfg.ExistingSchema {
		if err := r.dumpSchema(ctx); err != nil {
			return nil, err
		}
	}
	if st == nil {
		if st, err = r.start(ctx); err != nil {
			return nil, err
		}
	} else {
		log.Info("continuing an interrupted init", "slot", r.slot, "consistent_point", st.consistent.String(), "stopped", st.updated.Format(time.RFC3339))
	}
	res, err := r.copyData(ctx, st)
	if err != nil {
		return nil, err
	}
	if !cfg.ExistingSchema {
		if err := r.restoreIndexes(ctx); err != nil {
			return nil, err
		}
	}
	if err := r.finish(ctx, st); err != nil {
		return nil, r.cleanup(ctx, phasePostData, "recording the handoff on the target failed after the copy and post-data", err)
	}
	res.TableHandoffs = len(tableHandoffs(st.consistent, r.snapshots))
	res.Took = time.Since(started)
	return res, nil
}

// run is one init: its connections, and what it learned on the way.
type run struct {
	cfg      Config
	log      *slog.Logger
	src, dst *pgx.Conn
	info     catalog.SourceInfo
	slot     string
	topic    string
	tools    dumpTools
	dumpDir  string
	// snapshots maps every copied unit (schema, name), kept or copied by
	// this run, to the consistent point of the snapshot it was copied in.
	snapshots map[[2]string]pglogrepl.LSN
}

func connect(ctx context.Context, cfg Config, log *slog.Logger) (*run, error) {
	r := &run{cfg: cfg, log: log, slot: catalog.SlotName(cfg.Source), snapshots: map[[2]string]pglogrepl.LSN{}}
	var err error
	if r.src, err = pgx.Connect(ctx, cfg.SourceDSN); err != nil {
		return nil, fmt.Errorf("init: connect to source: %w", err)
	}
	if r.dst, err = pgx.Connect(ctx, cfg.TargetDSN); err != nil {
		r.close()
		return nil, fmt.Errorf("init: connect to target: %w", err)
	}
	if err := lockInit(ctx, r.dst, cfg.Source); err != nil {
		r.close()
		return nil, err
	}
	// Checks first, creating nothing: the publication comes after the
	// schema is on the target and the tools are known to work.
	r.info, err = catalog.PrepareSource(ctx, r.src, false)
	var pe *catalog.PreflightError
	if err != nil && !(errors.As(err, &pe) && pe.Check == "publication") {
		r.close()
		return nil, err
	}
	r.topic = cfg.Topic
	if r.topic == "" {
		r.topic = catalog.Topic(cfg.TopicPrefix, r.info.Major)
	}
	return r, nil
}

func (r *run) close() {
	if r.src != nil {
		r.src.Close(context.Background())
	}
	if r.dst != nil {
		// The init lock goes with the session, but only once the server
		// noticed; a run right after this one must not wait for that.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = r.dst.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		cancel()
		r.dst.Close(context.Background())
	}
	if r.dumpDir != "" {
		os.RemoveAll(r.dumpDir)
	}
}

// dumpSchema runs pg_dump of the source's schema, which every run needs for
// post-data.
func (r *run) dumpSchema(ctx context.Context) error {
	tools, err := findDumpTools(ctx, r.cfg.PgDump, r.info.Major)
	if err != nil {
		return err
	}
	r.tools = tools
	if r.dumpDir, err = os.MkdirTemp("", "pgtandem-init-schema-"); err != nil {
		return err
	}
	r.log.Info("dumping the schema", "pg_dump", tools.pgDump)
	if err := runTool(ctx, tools.pgDump, r.cfg.SourceDSN, "--schema-only", "--format=directory", "--file="+r.dumpDir+"/schema",
		"--no-publications", "--no-subscriptions", "--exclude-schema=pgtandem"); err != nil {
		return fmt.Errorf("init: pg_dump of the source schema: %w", err)
	}
	return nil
}

// start records a new init: on an existing schema it goes straight to the
// copy, otherwise it restores the tables first.
func (r *run) start(ctx context.Context) (*initState, error) {
	if r.cfg.ExistingSchema {
		return createState(ctx, r.dst, r.cfg.Source, r.info.SystemID, r.slot, r.mode(), phaseCopy)
	}
	return r.restoreTables(ctx)
}

// restoreTables restores the tables (pre-data) on a fresh target. The phase
// is recorded first, so that a run stopped halfway is recognised as such.
func (r *run) restoreTables(ctx context.Context) (*initState, error) {
	st, err := createState(ctx, r.dst, r.cfg.Source, r.info.SystemID, r.slot, r.mode(), phaseSchema)
	if err != nil {
		return nil, err
	}
	if err := runTool(ctx, r.tools.pgRestore, r.cfg.TargetDSN, "--section=pre-data", "--exit-on-error", r.dumpDir+"/schema"); err != nil {
		return nil, r.cleanup(ctx, phaseSchema, "restoring the tables on the target (pre-data) failed and may have left part of the schema",
			fmt.Errorf("pg_restore: %w", err))
	}
	if err := st.setPhase(ctx, r.dst, r.cfg.Source, phaseCopy); err != nil {
		return nil, err
	}
	return st, nil
}

// copyData copies every table not yet on the target, then the sequences.
// The first run copies in the exported snapshot of the slot it creates; a
// resumed one keeps the units an earlier run finished and copies the others
// in a snapshot of its own. Once the slot is recorded, a failure keeps it
// for a resume and says so.
func (r *run) copyData(ctx context.Context, st *initState) (res *Result, err error) {
	viaRoot, err := publishesViaRoot(ctx, r.src, r.info.Major)
	if err != nil {
		return nil, err
	}
	tables, err := listTables(ctx, r.src, viaRoot)
	if err != nil {
		return nil, err
	}
	res = &Result{HandoffLSN: st.consistent, Resumed: st.consistent != 0}
	var snap *snapshot
	if st.consistent == 0 {
		if snap, err = r.createSlot(ctx, st, tables); err != nil {
			return nil, err
		}
		res.HandoffLSN = st.consistent
	}
	defer func() {
		if snap != nil {
			snap.close()
		}
		if err != nil {
			err = &InterruptedError{Source: r.cfg.Source, Target: r.cfg.Target, Slot: r.slot, Since: st.consistent, Err: err}
		}
	}()
	copied, err := readCopied(ctx, r.dst, r.cfg.Source)
	if err != nil {
		return nil, err
	}
	kept, partial, untouched := sortUnits(groupUnits(tables), copied, st.consistent)
	var keptNames []string
	for _, k := range kept {
		res.Tables = append(res.Tables, k.copies...)
		r.snapshots[[2]string{k.schema, k.name}] = k.snapshot
		keptNames = append(keptNames, k.String())
	}
	if res.Resumed {
		r.log.Info("resuming the copy", "kept", keptNames, "recopied", unitNames(partial), "not_yet_copied", len(untouched))
	}
	if err := truncateUnits(ctx, r.dst, r.cfg.Source, partial); err != nil {
		return nil, err
	}
	if todo := append(partial, untouched...); len(todo) > 0 {
		if snap == nil {
			if snap, err = exportSnapshot(ctx, r.cfg.SourceDSN, r.slot+"_resume", true); err != nil {
				return nil, err
			}
			r.log.Info("copying the remaining tables in a new snapshot", "snapshot_lsn", snap.lsn.String(), "tables", len(todo))
		}
		copies, err := r.copyUnits(ctx, snap, todo)
		if err != nil {
			return nil, err
		}
		res.Tables = append(res.Tables, copies...)
	}
	// The snapshot is no longer needed; closing ends it (and drops a
	// temporary slot).
	if snap != nil {
		snap.close()
		snap = nil
	}
	if err := copySequences(ctx, r.cfg, r.dst); err != nil {
		return nil, err
	}
	if !r.cfg.ExistingSchema {
		if err := st.setPhase(ctx, r.dst, r.cfg.Source, phasePostData); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// createSlot creates publication and slot; the slot's exported snapshot is
// what a first run copies in. Its consistent point is recorded at once, and
// the slot dropped again when that fails: a slot init does not know of would
// hold WAL for nothing.
func (r *run) createSlot(ctx context.Context, st *initState, tables []sourceTable) (*snapshot, error) {
	if !r.cfg.AllowNonEmpty {
		if err := checkEmpty(ctx, r.dst, tables); err != nil {
			return nil, err
		}
	}
	if _, err := catalog.PrepareSource(ctx, r.src, true); err != nil {
		return nil, err
	}
	snap, err := exportSnapshot(ctx, r.cfg.SourceDSN, r.slot, false)
	if err != nil {
		return nil, err
	}
	if err := st.recordSlot(ctx, r.dst, r.cfg.Source, snap.lsn); err != nil {
		snap.close()
		if _, derr := r.src.Exec(context.WithoutCancel(ctx), `SELECT pg_drop_replication_slot($1)`, r.slot); derr != nil {
			return nil, fmt.Errorf("%w; the slot %s could not be dropped again (%v) and holds WAL: drop it with SELECT pg_drop_replication_slot('%s') on %s",
				err, r.slot, derr, r.slot, r.cfg.Source)
		}
		return nil, fmt.Errorf("%w (the slot %s was dropped again)", err, r.slot)
	}
	r.log.Info("created slot with an exported snapshot", "slot", r.slot, "consistent_point", snap.lsn.String(), "snapshot", snap.name)
	return snap, nil
}

// snapshot is a snapshot exported by the creation of a slot: the
// transactions committed before the slot's consistent point are in it, later
// ones are not. It lives while the replication connection that created it
// stays open and idle.
type snapshot struct {
	name string
	lsn  pglogrepl.LSN
	conn *pgconn.PgConn
}

// exportSnapshot creates slot with an exported snapshot. A resumed run
// creates a temporary one, gone with the connection: the permanent slot
// still holds every change since the first snapshot, and the tables copied
// in this one get their own handoff at its consistent point.
func exportSnapshot(ctx context.Context, dsn, slot string, temporary bool) (*snapshot, error) {
	conn, err := replicationConn(ctx, dsn)
	if err != nil {
		return nil, err
	}
	created, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{Temporary: temporary, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("init: create slot %s: %w", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("init: consistent point of slot %s: %w", slot, err)
	}
	return &snapshot{name: created.SnapshotName, lsn: lsn, conn: conn}, nil
}

func (s *snapshot) close() { s.conn.Close(context.Background()) }

// copyUnits copies the tables of units in snap, largest first so the
// longest copy starts earliest.
func (r *run) copyUnits(ctx context.Context, snap *snapshot, units []copyUnit) ([]TableCopy, error) {
	var tables []sourceTable
	for _, u := range units {
		tables = append(tables, u.tables...)
	}
	sort.SliceStable(tables, func(i, j int) bool { return tables[i].size > tables[j].size })
	parts, err := splitTables(ctx, r.src, tables, r.cfg.SplitRows, r.info.Major)
	if err != nil {
		return nil, err
	}
	tracker, byTable := newCopyTracker(tables, parts)
	stop := tracker.report(r.cfg.Progress)
	copies, err := copyParts(ctx, r.cfg, snap, parts, byTable, r.log)
	stop()
	if err != nil {
		return nil, err
	}
	for _, u := range units {
		r.snapshots[[2]string{u.schema, u.name}] = snap.lsn
	}
	return copies, nil
}

// restoreIndexes builds indexes, constraints and triggers (post-data). A
// failure cannot be continued (which of them exist is unknown), so the slot
// is dropped rather than left holding WAL, and the error says what to clean.
func (r *run) restoreIndexes(ctx context.Context) error {
	r.log.Info("building indexes, constraints and triggers (post-data)", "jobs", r.cfg.Jobs)
	err := runTool(ctx, r.tools.pgRestore, r.cfg.TargetDSN, "--section=post-data", "--exit-on-error", "--jobs="+strconv.Itoa(r.cfg.Jobs), r.dumpDir+"/schema")
	if err == nil {
		return nil
	}
	reason := "building indexes, constraints and triggers on the target (post-data) failed"
	if _, derr := r.src.Exec(context.WithoutCancel(ctx), `SELECT pg_drop_replication_slot($1)`, r.slot); derr == nil {
		reason += "; the slot " + r.slot + " was dropped, so it holds no WAL"
	}
	return r.cleanup(ctx, phasePostData, reason, fmt.Errorf("pg_restore: %w", err))
}

// finish records the handoff, the per-table handoffs and the end of the
// init in one target transaction.
func (r *run) finish(ctx context.Context, st *initState) error {
	tx, err := r.dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("init: record the handoff on the target: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := catalog.RecordTableHandoffs(ctx, tx.Conn(), r.cfg.Source, tableHandoffs(st.consistent, r.snapshots)); err != nil {
		return err
	}
	// Every transaction that committed before the consistent point is in
	// the snapshot; one that commits right at it is decoded, so the handoff
	// is the position just before.
	if err := catalog.RecordHandoff(ctx, tx.Conn(), r.cfg.Source, r.topic, r.info.SystemID, st.consistent-1); err != nil {
		return err
	}
	if err := st.setPhase(ctx, tx.Conn(), r.cfg.Source, phaseDone); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("init: record the handoff on the target: %w", err)
	}
	return nil
}

// alreadyDone answers a run after a finished init with what that one did.
func (r *run) alreadyDone(ctx context.Context, st *initState) (*Result, error) {
	copied, err := readCopied(ctx, r.dst, r.cfg.Source)
	if err != nil {
		return nil, err
	}
	res := &Result{HandoffLSN: st.consistent, AlreadyDone: true}
	index := map[[2]string]int{}
	for _, c := range copied {
		key := [2]string{c.schema, c.table}
		i, ok := index[key]
		if !ok {
			i = len(res.Tables)
			index[key] = i
			res.Tables = append(res.Tables, TableCopy{Table: c.schema + "." + c.table, Kept: true})
		}
		tc := &res.Tables[i]
		tc.Rows += c.rows
		tc.Bytes += c.bytes
		tc.Took = max(tc.Took, c.took)
		tc.Parts++
	}
	r.log.Info("init already finished", "slot", r.slot, "handoff", st.consistent.String(), "finished", st.updated.Format(time.RFC3339))
	return res, nil
}

// sourceTable is a table whose rows are copied: every table with storage
// (partitions individually, their roots hold none).
type sourceTable struct {
	qualified    string
	id           string // schema.name, for messages
	schema, name string
	size         int64 // on disk, an estimate of the bytes COPY moves
	estRows      int64
	// unitSchema and unitName name the unit the table is copied and handed
	// off with (see copyUnit).
	unitSchema, unitName string
	// columns lists the stored columns (generated ones are left to the
	// target to compute); where selects one key range of a table split for
	// a parallel copy, empty for the whole table; part counts the ranges
	// from 0 up to parts.
	columns     string
	where       string
	part, parts int
}

func (u copyUnit) String() string { return u.schema + "." + u.name }

func unitNames(units []copyUnit) []string {
	names := make([]string, len(units))
	for i, u := range units {
		names[i] = u.String()
	}
	return names
}

// publishesViaRoot reports whether the publication names the changes of
// partitions by their root, as init creates it on PostgreSQL 13 or later.
func publishesViaRoot(ctx context.Context, conn *pgx.Conn, major int) (bool, error) {
	if major < 13 {
		return false, nil
	}
	var via bool
	err := conn.QueryRow(ctx, `SELECT pubviaroot FROM pg_publication WHERE pubname = $1`, catalog.PublicationName).Scan(&via)
	if errors.Is(err, pgx.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("init: read publication %s: %w", catalog.PublicationName, err)
	}
	return via, nil
}

func listTables(ctx context.Context, conn *pgx.Conn, viaRoot bool) ([]sourceTable, error) {
	root := "c.oid"
	if viaRoot {
		root = "coalesce(pg_partition_root(c.oid), c.oid)"
	}
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, pg_table_size(c.oid), greatest(c.reltuples, 0)::bigint, rn.nspname, r.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_class r ON r.oid = `+root+` JOIN pg_namespace rn ON rn.oid = r.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtandem') AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY c.relpages DESC`)
	if err != nil {
		return nil, fmt.Errorf("init: list source tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (sourceTable, error) {
		var t sourceTable
		err := r.Scan(&t.qualified, &t.schema, &t.name, &t.size, &t.estRows, &t.unitSchema, &t.unitName)
		t.id = t.schema + "." + t.name
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
		t.part, t.parts = 0, 1
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
			part.part, part.parts = i, len(bounds)+1
			out = append(out, part)
		}
	}
	return out, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// copyParts streams the parts from the snapshot into the target, Jobs at
// once.
func copyParts(ctx context.Context, cfg Config, snap *snapshot, parts []sourceTable, tables map[string]*tableTracker, log *slog.Logger) ([]TableCopy, error) {
	results := make([]TableCopy, len(parts))
	var copied atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Jobs)
	for i, p := range parts {
		g.Go(func() error {
			tt := tables[p.id]
			tt.start()
			r, err := copyPart(gctx, cfg, snap, p, tt)
			if err != nil {
				return err
			}
			tt.partDone()
			results[i] = r
			log.Info("copied", "table", p.id, "rows", r.Rows, "MB", fmt.Sprintf("%.1f", float64(r.Bytes)/1e6),
				"MB/s", fmt.Sprintf("%.1f", float64(r.Bytes)/1e6/max(r.Took.Seconds(), 0.001)), "done", fmt.Sprintf("%d/%d", copied.Add(1), len(parts)))
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

// copyPart copies one table, or one key range of it, in one target
// transaction that also records it in pgtandem.init_tables: a resumed init
// keeps exactly what was committed.
func copyPart(ctx context.Context, cfg Config, snap *snapshot, t sourceTable, table *tableTracker) (TableCopy, error) {
	started := time.Now()
	res := TableCopy{Table: t.id, Parts: 1}
	src, err := pgconn.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: connect to source: %w", t.id, err)
	}
	defer src.Close(context.Background())
	dst, err := pgx.Connect(ctx, cfg.TargetDSN)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: connect to target: %w", t.id, err)
	}
	defer dst.Close(context.Background())
	if err := src.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '`+snap.name+`'`).Close(); err != nil {
		return res, fmt.Errorf("init: copy %s: enter the slot's snapshot %s: %w", t.id, snap.name, err)
	}
	// Rows are loaded as the source holds them: no triggers or foreign key
	// checks fire (constraints come with post-data anyway).
	if _, err := dst.Exec(ctx, `SET session_replication_role = replica; SET synchronous_commit = off`); err != nil {
		return res, err
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: begin on the target: %w", t.id, err)
	}
	defer tx.Rollback(context.Background())
	pr, pw := io.Pipe()
	// The source hands over one row per write; batching them keeps the pipe
	// from switching goroutines per row and the target from getting one
	// CopyData message per row.
	buffered := bufio.NewWriterSize(pw, 256<<10)
	counter := &countingWriter{w: buffered, table: table}
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
		tag, err := tx.Conn().PgConn().CopyFrom(gctx, pr, `COPY `+t.qualified+` (`+t.columns+`) FROM STDIN`)
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
	res.Bytes = counter.n
	res.Took = time.Since(started)
	_, err = tx.Exec(ctx, recordPartSQL, cfg.Source, t.schema, t.name, t.part, t.parts, snap.lsn.String(), res.Rows, res.Bytes, res.Took.Seconds())
	if err != nil {
		return res, fmt.Errorf("init: copy %s: record it in pgtandem.init_tables: %w", t.id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("init: copy %s: commit on the target: %w", t.id, err)
	}
	return res, nil
}

// countingWriter counts the bytes and rows that pass, for the part and for
// its table's progress. COPY's text format ends every row with a newline and
// escapes those inside values, so newlines count rows.
type countingWriter struct {
	w     io.Writer
	n     int64
	table *tableTracker
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.table.bytes.Add(int64(n))
	c.table.rows.Add(int64(bytes.Count(p[:n], []byte{'\n'})))
	return n, err
}

// copySequences sets every target sequence to its value on the source.
// Sequences are not transactional, so reading one in a snapshot still gives
// its current value: any value from the copy on is as good, and the switch
// sets them again at the end.
func copySequences(ctx context.Context, cfg Config, dst *pgx.Conn) error {
	src, err := pgx.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return fmt.Errorf("init: sequences: connect to source: %w", err)
	}
	defer src.Close(context.Background())
	rows, err := src.Query(ctx, `SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences WHERE schemaname NOT IN ('pgtandem')`)
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
		if err := src.QueryRow(ctx, `SELECT last_value, is_called FROM `+seq).Scan(&last, &called); err != nil {
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
