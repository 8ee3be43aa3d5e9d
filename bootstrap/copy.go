package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/pgtandem/pgtandem/internal/catalog"
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
	if r.src, err = catalog.Connect(ctx, cfg.SourceDSN); err != nil {
		return nil, fmt.Errorf("init: connect to source: %w", err)
	}
	if r.dst, err = catalog.Connect(ctx, cfg.TargetDSN); err != nil {
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

// start records a new init: on an existing schema it goes straight to the
// copy, otherwise it restores the tables first.
func (r *run) start(ctx context.Context) (*initState, error) {
	if r.cfg.ExistingSchema {
		return createState(ctx, r.dst, r.cfg.Source, r.info.SystemID, r.slot, r.mode(), phaseCopy)
	}
	return r.restoreTables(ctx)
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
