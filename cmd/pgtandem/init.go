package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/bootstrap"
)

func newInitCmd(a *app) *cobra.Command {
	var d direction
	var mode string
	cfg := bootstrap.Config{Jobs: 4}
	cmd := &cobra.Command{
		Use:   "init --from CLUSTER --to CLUSTER",
		Short: "Create slot and publication and make the initial copy (or record a clone's handoff LSN)",
		Long: `Make the target ready for broker2pg.

--mode copy (default), for an empty target: copies the schema (tables first, indexes and constraints
after the data), creates the publication and the slot with an exported snapshot, copies every table
inside that snapshot (--jobs at once), sets the sequences, and records the slot's consistent point in
the target's pgtandem.apply_progress, so that pg2broker and broker2pg continue exactly where the copy
ended. A failed init drops the slot it created.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, true); err != nil {
				return err
			}
			if mode != "copy" {
				return fmt.Errorf("init --mode %s: only copy mode is in this build (clone mode lands with the rest of issue 6)", mode)
			}
			from, _ := a.cfg.Cluster(d.from)
			to, _ := a.cfg.Cluster(d.to)
			cfg.Source, cfg.SourceDSN, cfg.TargetDSN = d.from, from.DSN.ConnString(), to.DSN.ConnString()
			cfg.Topic, cfg.TopicPrefix = from.Topic, a.cfg.Pulsar.TopicPrefix
			cfg.Progress = byteProgress(a.stderr, "init copy")
			res, err := bootstrap.Copy(cmd.Context(), cfg, a.log)
			if err != nil {
				return err
			}
			var rows, bytes int64
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "table\trows\tMB\tseconds\t")
			for _, t := range res.Tables {
				fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t\n", t.Table, t.Rows, float64(t.Bytes)/1e6, t.Took.Seconds())
				rows += t.Rows
				bytes += t.Bytes
			}
			tw.Flush()
			fmt.Fprintf(a.stdout, "copied %d tables, %d rows, %.1f MB in %s (%.0f rows/s); handoff LSN %s recorded on %s\n",
				len(res.Tables), rows, float64(bytes)/1e6, res.Took.Round(time.Millisecond), float64(rows)/res.Took.Seconds(), res.HandoffLSN, d.to)
			fmt.Fprintf(a.stdout, "next: pgtandem pg2broker --from %s and pgtandem broker2pg --from %s --to %s\n", d.from, d.from, d.to)
			return nil
		},
	}
	d.flags(cmd, true)
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "copy", "copy (empty target) or clone (target from a physical copy)")
	f.IntVar(&cfg.Jobs, "jobs", cfg.Jobs, "tables copied at once, and parallelism of the index build")
	f.BoolVar(&cfg.AllowNonEmpty, "allow-nonempty", false, "copy into target tables that already hold rows")
	f.StringVar(&cfg.PgDump, "pg-dump", "", "pg_dump to use (default: one of the source's major or newer)")
	return cmd
}
