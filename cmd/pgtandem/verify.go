package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/verify"
)

func newVerifyCmd(a *app) *cobra.Command {
	var d direction
	var asJSON bool
	cfg := verify.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "verify --from CLUSTER --to CLUSTER",
		Short: "Prove two clusters hold the same schema and data (exit 0 equal, 1 different, 2 error)",
		Long: `Compare schema (tables, columns and types, primary keys, sequences) and data of two clusters.
Each server hashes its own rows in key-ordered chunks; only counts and hashes cross the network, and
differing chunks are narrowed down to the keys of the differing rows.

It compares the databases as they are: run it on a quiet or fenced source whose target has caught up.
Exit status: 0 equal, 1 different, 2 error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, true); err != nil {
				return &exitError{2, err}
			}
			from, _ := a.cfg.Cluster(d.from)
			to, _ := a.cfg.Cluster(d.to)
			cfg.SourceDSN, cfg.TargetDSN = from.DSN.ConnString(), to.DSN.ConnString()
			started := time.Now()
			progress, stopProgress := progressReporter(a.stderr, "verify")
			report, err := verify.Run(cmd.Context(), cfg, progress)
			stopProgress()
			if err != nil {
				return &exitError{2, err}
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					Equal bool `json:"equal"`
					*verify.Report
				}{report.Equal(), report}); err != nil {
					return &exitError{2, err}
				}
			} else {
				printVerifyReport(a.stdout, report, time.Since(started))
			}
			if !report.Equal() {
				return &exitError{1, fmt.Errorf("%s and %s differ", d.from, d.to)}
			}
			return nil
		},
	}
	d.flags(cmd, true)
	f := cmd.Flags()
	f.IntVar(&cfg.Jobs, "jobs", cfg.Jobs, "chunks hashed at once on each server")
	f.StringSliceVar(&cfg.Tables, "tables", nil, "compare only these tables (schema.table, comma-separated)")
	f.IntVar(&cfg.ChunkRows, "chunk-rows", cfg.ChunkRows, "rows per chunk")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printVerifyReport(w io.Writer, r *verify.Report, took time.Duration) {
	for _, d := range r.Schema {
		fmt.Fprintf(w, "schema: %s: %s\n", d.Object, d.Issue)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "table\tsource rows\ttarget rows\tchunks\tdiffering\tstatus\t")
	for _, t := range r.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t\n", t.Table, t.SourceRows, t.TargetRows, t.Chunks, t.DiffChunks, t.Status)
	}
	tw.Flush()
	for _, t := range r.Tables {
		for _, row := range t.Rows {
			fmt.Fprintf(w, "%s: key (%s): %s\n", t.Table, row.Key, row.Issue)
		}
		if more := t.DiffRows - len(t.Rows); more > 0 {
			fmt.Fprintf(w, "%s: %d more differing rows\n", t.Table, more)
		}
	}
	verdict := "EQUAL"
	if !r.Equal() {
		verdict = "DIFFERENT"
	}
	fmt.Fprintf(w, "%s: %d tables compared in %s\n", verdict, len(r.Tables), took.Round(time.Millisecond))
}
