package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/logging"
)

func newInitCmd(a *app) *cobra.Command {
	var d direction
	var mode, slotLSN, schema string
	var finish bool
	cfg := bootstrap.Config{Jobs: 4, SplitRows: 500000}
	cmd := &cobra.Command{
		Use:   "init --from CLUSTER --to CLUSTER",
		Short: "Create slot and publication and make the initial copy (or record a clone's handoff LSN)",
		Long: `Make the target ready for broker2pg.

--mode copy (default), for an empty target: copies the schema (tables first, indexes and constraints
after the data), creates the publication and the slot with an exported snapshot, copies every table
inside that snapshot (--jobs at once), sets the sequences, and records the slot's consistent point in
the target's pgtandem.apply_progress, so that pg2broker and broker2pg continue exactly where the copy
ended. An interrupted copy keeps the slot (and says so: it holds WAL); running init again resumes it,
keeping the tables already copied. What cannot be resumed is refused with the exact steps to start over.

--mode clone, for a target built from a physical copy of the source (disk snapshot or pg_basebackup,
then pg_upgrade): creates publication and slot and prints the recovery settings that stop the copy at
the slot's LSN; --finish --slot-lsn LSN on the promoted copy records the handoff. See
docs/runbook-clone.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, true); err != nil {
				return err
			}
			from, _ := a.cfg.Cluster(d.from)
			to, _ := a.cfg.Cluster(d.to)
			cfg.Source, cfg.SourceDSN, cfg.Target, cfg.TargetDSN = d.from, from.DSN.ConnString(), d.to, to.DSN.ConnString()
			cfg.Topic, cfg.TopicPrefix = from.Topic, a.cfg.Pulsar.TopicPrefix
			switch {
			case mode == "clone" && finish:
				lsn, err := pglogrepl.ParseLSN(slotLSN)
				if err != nil {
					return fmt.Errorf("--slot-lsn %q is not an LSN like 16/B374D848 (init --mode clone printed it)", slotLSN)
				}
				if err := bootstrap.FinishClone(cmd.Context(), cfg, lsn); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "handoff recorded on %s: broker2pg applies the transactions of %s committed at or after %s\n", d.to, d.from, lsn)
				fmt.Fprintf(a.stdout, "next: pgtandem pg2broker --from %s and pgtandem broker2pg --from %s --to %s\n", d.from, d.from, d.to)
				return nil
			case mode == "clone":
				plan, err := bootstrap.PrepareClone(cmd.Context(), cfg)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "created publication pgtandem and slot %s at %s on %s\n\n", plan.Slot, plan.SlotLSN, d.from)
				fmt.Fprintf(a.stdout, "Recover the physical copy (taken before now) with these settings, so that it stops exactly there:\n\n")
				for _, s := range plan.RecoverySettings {
					fmt.Fprintf(a.stdout, "    %s\n", s)
				}
				fmt.Fprintf(a.stdout, "\nthen pg_upgrade it if its major changes, start it, and run:\n\n    pgtandem init --from %s --to %s --mode clone --finish --slot-lsn %s\n\n", d.from, d.to, plan.SlotLSN)
				fmt.Fprintf(a.stdout, "The slot holds WAL on %s from now on: finish the clone, or drop it with SELECT pg_drop_replication_slot('%s').\n", d.from, plan.Slot)
				return nil
			case mode != "copy":
				return fmt.Errorf("init --mode %q: want copy or clone", mode)
			case schema != "restore" && schema != "existing":
				return fmt.Errorf("init --schema %q: want restore or existing", schema)
			}
			cfg.ExistingSchema = schema == "existing"
			return runCopy(cmd.Context(), a, cfg, d)
		},
	}
	d.flags(cmd, true)
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "copy", "copy (empty target) or clone (target from a physical copy)")
	f.IntVar(&cfg.Jobs, "jobs", cfg.Jobs, "tables copied at once, and parallelism of the index build")
	f.IntVar(&cfg.SplitRows, "split-rows", cfg.SplitRows, "copy tables above this many rows in key ranges, several at once (0: never)")
	f.StringVar(&schema, "schema", "restore", "restore (init creates the source's tables on an empty target) or existing (the target has them; init copies rows only)")
	f.BoolVar(&cfg.AllowNonEmpty, "allow-nonempty", false, "with --schema existing: copy into tables that already hold rows (cannot be resumed)")
	f.StringVar(&cfg.PgDump, "pg-dump", "", "pg_dump to use (default: one of the source's major or newer)")
	f.BoolVar(&finish, "finish", false, "clone mode, last step: record the handoff on the promoted copy")
	f.StringVar(&slotLSN, "slot-lsn", "", "clone mode with --finish: the slot LSN the first step printed")
	return cmd
}

// runCopy runs copy mode with its progress display and prints what it did.
func runCopy(ctx context.Context, a *app, cfg bootstrap.Config, d direction) error {
	display := newCopyDisplay(a.stderr, "init copy")
	cfg.Progress = display.update
	log := a.log
	if display.logs != a.stderr {
		format := a.cfg.Log.Format
		if format == "auto" {
			format = "text"
		}
		l, err := logging.New(display.logs, a.cfg.Log.Level, format)
		if err != nil {
			return err
		}
		log = l
	}
	res, err := bootstrap.Copy(ctx, cfg, log)
	display.stop()
	if err != nil {
		return err
	}
	next := fmt.Sprintf("next: pgtandem pg2broker --from %s and pgtandem broker2pg --from %s --to %s\n", d.from, d.from, d.to)
	if res.AlreadyDone {
		fmt.Fprintf(a.stdout, "init of %s into %s already finished (%d tables, handoff LSN %s); nothing to do\n", d.from, d.to, len(res.Tables), res.HandoffLSN)
		fmt.Fprint(a.stdout, next)
		return nil
	}
	var rows, bytes int64
	kept := 0
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "table\trows\tMB\tseconds\tparts\t\t")
	for _, t := range res.Tables {
		from := ""
		if t.Kept {
			from = "kept from the interrupted run"
			kept++
		} else {
			rows += t.Rows
			bytes += t.Bytes
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%d\t%s\t\n", t.Table, t.Rows, float64(t.Bytes)/1e6, t.Took.Seconds(), t.Parts, from)
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "copied %d tables, %d rows, %.1f MB in %s (%.0f rows/s); handoff LSN %s recorded on %s\n",
		len(res.Tables)-kept, rows, float64(bytes)/1e6, res.Took.Round(time.Millisecond), float64(rows)/res.Took.Seconds(), res.HandoffLSN, d.to)
	if res.Resumed {
		fmt.Fprintf(a.stdout, "resumed an interrupted init: %d tables kept, %d copied in a later snapshot with their own handoff (pgtandem.table_handoff)\n", kept, res.TableHandoffs)
	}
	fmt.Fprint(a.stdout, next)
	return nil
}
