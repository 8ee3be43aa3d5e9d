package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// InterruptedError reports a copy that stopped (an error, Ctrl-C) after the
// slot was created: the slot is kept, so that running init again resumes
// without copying the finished tables again, but it holds WAL on the source
// until then.
type InterruptedError struct {
	Source, Target string
	Slot           string
	// Since is the slot's consistent point: the source keeps its WAL from
	// there on.
	Since pglogrepl.LSN
	Err   error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("init: the copy stopped: %v; the slot %s is kept on %s and holds WAL from %s on until init finishes: run `%s` again to resume "+
		"(tables already copied are kept), or give up with SELECT pg_drop_replication_slot('%s') on %s",
		e.Err, e.Slot, e.Source, e.Since, initCommand(e.Source, e.Target), e.Slot, e.Source)
}

func (e *InterruptedError) Unwrap() error { return e.Err }

// CleanupError reports an earlier init that cannot be continued, with the
// exact steps after which init runs again from the start.
type CleanupError struct {
	Source string
	// Phase is where the earlier init stopped: schema, copy, post-data or
	// done.
	Phase  string
	Reason string
	// Steps are what to run, in order, each naming the cluster to run it on.
	Steps []string
	// Err is the failure that stopped this run, if it was this run.
	Err error
}

func (e *CleanupError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "init of %s cannot be continued (stopped in phase %s): %s", e.Source, e.Phase, e.Reason)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	b.WriteString(". To start over:")
	for i, s := range e.Steps {
		fmt.Fprintf(&b, " (%d) %s;", i+1, s)
	}
	return strings.TrimSuffix(b.String(), ";")
}

func (e *CleanupError) Unwrap() error { return e.Err }

// SchemaExistsError reports a target that already has tables of the source
// while no init of it was recorded: copy mode restores the schema itself.
type SchemaExistsError struct {
	Tables []string
}

func (e *SchemaExistsError) Error() string {
	return fmt.Sprintf("init: the target already has tables of the source (%s) but no init of it is recorded in pgtandem.init_state; "+
		"copy mode restores the schema itself: drop those tables, or point --to at an empty database", strings.Join(e.Tables, ", "))
}

func initCommand(source, target string) string {
	if target == "" {
		target = "TARGET"
	}
	return fmt.Sprintf("pgtandem init --from %s --to %s", source, target)
}

// slotState is what init checks of its slot before it continues.
type slotState struct {
	confirmed pglogrepl.LSN
	active    bool
	lost      bool
}

// readSlotState returns the state of slot, nil when it does not exist.
func readSlotState(ctx context.Context, conn *pgx.Conn, slot string, major int) (*slotState, error) {
	lost := "false"
	if major >= 13 {
		lost = "coalesce(wal_status = 'lost', false)"
	}
	var s slotState
	err := conn.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn, '0/0'), active, `+lost+` FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&s.confirmed, &s.active, &s.lost)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("init: read slot %s: %w", slot, err)
	}
	return &s, nil
}

// resumable reads what an earlier init left and decides how this one goes
// on: nil for a fresh init, the state to continue from (phase copy or done),
// or an error that says what to clean.
func (r *run) resumable(ctx context.Context) (*initState, error) {
	st, err := readState(ctx, r.dst, r.cfg.Source)
	if err != nil {
		return nil, err
	}
	slot, err := readSlotState(ctx, r.src, r.slot, r.info.Major)
	if err != nil {
		return nil, err
	}
	if st == nil {
		if slot != nil {
			return nil, &SlotExistsError{Slot: r.slot}
		}
		if r.cfg.ExistingSchema {
			return nil, r.checkTablesExist(ctx)
		}
		return nil, r.checkNoTables(ctx)
	}
	if st.mode != r.mode() && st.phase != phaseDone {
		return nil, fmt.Errorf("init: the interrupted init of %s ran with %s, this one with %s: run it again with the flags it had",
			r.cfg.Source, modeFlags(st.mode), modeFlags(r.mode()))
	}
	if st.sourceSystem != r.info.SystemID {
		return nil, r.cleanup(ctx, st.phase, fmt.Sprintf("the target holds a copy of another cluster (system identifier %s; %s is %s)", st.sourceSystem, r.cfg.Source, r.info.SystemID), nil)
	}
	switch st.phase {
	case phaseDone:
		if slot == nil {
			return nil, r.cleanup(ctx, st.phase, fmt.Sprintf("init finished, but the slot %s no longer exists, so the target cannot follow %s any more", r.slot, r.cfg.Source), nil)
		}
		return st, nil
	case phaseSchema:
		return nil, r.cleanup(ctx, st.phase, "it stopped while restoring the tables (pre-data), so the target may hold part of the schema", nil)
	case phasePostData:
		return nil, r.cleanup(ctx, st.phase, "it stopped while building indexes, constraints and triggers (post-data); which of them exist cannot be told apart from a finished restore", nil)
	case phaseCopy:
	default:
		return nil, fmt.Errorf("init: pgtandem.init_state of %s on the target has the unknown phase %q (written by a newer pgtandem?)", r.cfg.Source, st.phase)
	}
	switch {
	case st.consistent == 0 && slot == nil:
		// Stopped between the schema and the slot: nothing copied yet.
		return st, nil
	case st.consistent == 0:
		return nil, &CleanupError{Source: r.cfg.Source, Phase: st.phase,
			Reason: fmt.Sprintf("it created the slot %s but stopped before recording it, so the snapshot the copy needs is gone", r.slot),
			Steps:  []string{r.dropSlotStep(), "run `" + initCommand(r.cfg.Source, r.cfg.Target) + "` again: it keeps the tables it restored and creates the slot anew"}}
	case slot == nil:
		return nil, r.cleanup(ctx, st.phase, fmt.Sprintf("the slot %s no longer exists, so the changes since the copy began are lost", r.slot), nil)
	case slot.lost:
		return nil, r.cleanup(ctx, st.phase, fmt.Sprintf("the slot %s is invalidated (wal_status lost), so the changes since the copy began are lost", r.slot), nil)
	case slot.confirmed != st.consistent:
		return nil, r.cleanup(ctx, st.phase, fmt.Sprintf("the slot %s was streamed from before init finished (confirmed up to %s, the copy began at %s), so changes after the copy are lost to the target",
			r.slot, slot.confirmed, st.consistent), nil)
	case slot.active:
		return nil, fmt.Errorf("init: the slot %s is in use (pg2broker?) while the init of %s has not finished: stop what uses it, then run init again", r.slot, r.cfg.Source)
	case st.mode == modeExistingNonEmpty:
		// Resuming truncates what was partly copied, which would take the
		// rows the tables held before init with it.
		return nil, r.cleanup(ctx, st.phase, "it stopped while copying into tables that held rows before it (--allow-nonempty), and the rows it copied cannot be told from those", nil)
	}
	return st, nil
}

// mode is the schema mode of this run, as init_state records it.
func (r *run) mode() string {
	switch {
	case r.cfg.ExistingSchema && r.cfg.AllowNonEmpty:
		return modeExistingNonEmpty
	case r.cfg.ExistingSchema:
		return modeExisting
	}
	return modeRestore
}

// modeFlags names the flags of a schema mode.
func modeFlags(mode string) string {
	switch mode {
	case modeExisting:
		return "--schema existing"
	case modeExistingNonEmpty:
		return "--schema existing --allow-nonempty"
	}
	return "--schema restore (the default)"
}

// MissingTablesError reports source tables that a target of --schema
// existing lacks.
type MissingTablesError struct {
	Tables []string
}

func (e *MissingTablesError) Error() string {
	return fmt.Sprintf("init: --schema existing, but the target lacks tables of the source: %s; create them (columns of the same names; the target may have more), or leave --schema at restore to have init create them",
		strings.Join(e.Tables, ", "))
}

// checkTablesExist makes sure the target has every table of the source,
// for --schema existing.
func (r *run) checkTablesExist(ctx context.Context) error {
	_, missing, err := r.sourceTablesOnTarget(ctx)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return &MissingTablesError{Tables: missing}
	}
	return nil
}

// sourceTablesOnTarget splits the source's tables into those the target
// has and those it lacks, each sorted.
func (r *run) sourceTablesOnTarget(ctx context.Context) (present, missing []string, err error) {
	names, err := r.sourceTableNames(ctx)
	if err != nil {
		return nil, nil, err
	}
	err = r.dst.QueryRow(ctx, `SELECT coalesce(array_agg(t ORDER BY t) FILTER (WHERE to_regclass(t) IS NOT NULL), '{}'),
		coalesce(array_agg(t ORDER BY t) FILTER (WHERE to_regclass(t) IS NULL), '{}') FROM unnest($1::text[]) t`, names).Scan(&present, &missing)
	if err != nil {
		return nil, nil, fmt.Errorf("init: look for the source's tables on the target: %w", err)
	}
	return present, missing, nil
}

func (r *run) sourceTableNames(ctx context.Context) ([]string, error) {
	tables, err := listTables(ctx, r.src, false)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.qualified
	}
	return names, nil
}

// checkNoTables refuses a fresh init into a target that already has tables
// of the source: the schema restore would fail on them, and a later
// "recreate the database" would hit someone else's data.
func (r *run) checkNoTables(ctx context.Context) error {
	present, _, err := r.sourceTablesOnTarget(ctx)
	if err != nil {
		return err
	}
	if len(present) > 0 {
		return &SchemaExistsError{Tables: present}
	}
	return nil
}

// cleanup builds the error for an init that must start over: drop the slot
// if it exists, recreate the target database, run init again.
func (r *run) cleanup(ctx context.Context, phase, reason string, cause error) error {
	// Also after Ctrl-C: the steps are what the operator needs most then.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var steps []string
	if exists, err := slotExists(ctx, r.src, r.slot); err != nil || exists {
		steps = append(steps, r.dropSlotStep())
	}
	if r.cfg.ExistingSchema {
		// The schema is the operator's: only the copied rows and init's
		// records go.
		names, err := r.sourceTableNames(ctx)
		if err != nil {
			return fmt.Errorf("init: %s; list the source's tables: %w", reason, err)
		}
		rows := "TRUNCATE " + strings.Join(names, ", ") + " (they were empty before init)"
		if r.cfg.AllowNonEmpty {
			rows = "remove the rows init copied from " + strings.Join(names, ", ") + " (they held rows before init, which it cannot tell apart)"
		}
		steps = append(steps, "on "+targetName(r.cfg.Target)+": "+rows,
			fmt.Sprintf("on %s: DELETE FROM pgtandem.init_state WHERE source_cluster = '%s'; DELETE FROM pgtandem.init_tables WHERE source_cluster = '%s'",
				targetName(r.cfg.Target), r.cfg.Source, r.cfg.Source),
			"run `"+initCommand(r.cfg.Source, r.cfg.Target)+" --schema existing` again")
		return &CleanupError{Source: r.cfg.Source, Phase: phase, Reason: reason, Steps: steps, Err: cause}
	}
	var db, owner string
	if err := r.dst.QueryRow(ctx, `SELECT current_database(), pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()`).Scan(&db, &owner); err != nil {
		return fmt.Errorf("init: %s; read the target database's name: %w", reason, err)
	}
	steps = append(steps,
		fmt.Sprintf("on %s, connected to another database: DROP DATABASE %s; CREATE DATABASE %s OWNER %s (copy mode needs it empty; this also removes pgtandem.init_state)",
			targetName(r.cfg.Target), pgx.Identifier{db}.Sanitize(), pgx.Identifier{db}.Sanitize(), pgx.Identifier{owner}.Sanitize()),
		"run `"+initCommand(r.cfg.Source, r.cfg.Target)+"` again")
	return &CleanupError{Source: r.cfg.Source, Phase: phase, Reason: reason, Steps: steps, Err: cause}
}

func (r *run) dropSlotStep() string {
	return fmt.Sprintf("on %s: SELECT pg_drop_replication_slot('%s') (the slot holds WAL until then)", r.cfg.Source, r.slot)
}

func targetName(target string) string {
	if target == "" {
		return "the target"
	}
	return target
}

// keptUnit is a unit an earlier run copied completely.
type keptUnit struct {
	copyUnit
	snapshot pglogrepl.LSN
	copies   []TableCopy
}

// sortUnits tells the units an earlier run finished (every key range of
// every table committed, all in one snapshot no older than the slot's
// consistent point) from those it left with only some committed (to
// truncate and copy again) and those it did not touch.
func sortUnits(units []copyUnit, copied []copiedPart, consistent pglogrepl.LSN) (kept []keptUnit, partial, untouched []copyUnit) {
	parts := map[[2]string][]copiedPart{}
	stale := map[[2]string]bool{}
	for _, c := range copied {
		key := [2]string{c.schema, c.table}
		if c.snapshot < consistent {
			// Copied for a slot that is gone: its changes are lost.
			stale[key] = true
			continue
		}
		parts[key] = append(parts[key], c)
	}
	for _, u := range units {
		k := keptUnit{copyUnit: u}
		complete, touched := true, false
		for _, t := range u.tables {
			key := [2]string{t.schema, t.name}
			ps := parts[key]
			touched = touched || len(ps) > 0 || stale[key]
			if len(ps) == 0 || len(ps) != ps[0].parts || stale[key] {
				complete = false
				continue
			}
			tc := TableCopy{Table: t.id, Parts: len(ps), Kept: true}
			for _, p := range ps {
				if k.snapshot == 0 {
					k.snapshot = p.snapshot
				}
				complete = complete && p.snapshot == k.snapshot
				tc.Rows += p.rows
				tc.Bytes += p.bytes
				tc.Took = max(tc.Took, p.took)
			}
			k.copies = append(k.copies, tc)
		}
		switch {
		case complete:
			kept = append(kept, k)
		case touched:
			partial = append(partial, u)
		default:
			untouched = append(untouched, u)
		}
	}
	return kept, partial, untouched
}

// truncateUnits empties the tables of units whose copy an earlier run left
// incomplete, with their init_tables rows, in one transaction.
func truncateUnits(ctx context.Context, conn *pgx.Conn, source string, units []copyUnit) error {
	if len(units) == 0 {
		return nil
	}
	var names []string
	b := &pgx.Batch{}
	for _, u := range units {
		for _, t := range u.tables {
			names = append(names, t.qualified)
			b.Queue(`DELETE FROM pgtandem.init_tables WHERE source_cluster = $1 AND schema_name = $2 AND table_name = $3`, source, t.schema, t.name)
		}
	}
	slices.Sort(names)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(names, ", ")); err != nil {
		return fmt.Errorf("init: truncate the partly copied tables %s on the target: %w", strings.Join(names, ", "), err)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("init: forget the partly copied tables in pgtandem.init_tables: %w", err)
	}
	return tx.Commit(ctx)
}
