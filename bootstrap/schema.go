package bootstrap

import (
	"context"
	"fmt"
	"os"
	"strconv"
)

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
