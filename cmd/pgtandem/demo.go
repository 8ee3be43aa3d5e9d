package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/internal/demo"
)

func newDemoCmd(a *app) *cobra.Command {
	var opts demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local upgrade rehearsal from PostgreSQL 15 to 17, switch and rollback included, with the built-in broker",
		Long: `Run a whole upgrade rehearsal on this machine:
  1. start PostgreSQL 15 ("old") and 17 ("new") in --dir (deleted first), PgBouncer in front of old
     (transaction pooling) and the built-in broker
  2. create a sample application database (pgbench tables and a few more) and run a write load on it
     through PgBouncer
  3. pgtandem init (consistent copy old -> new) under that load, then pg2broker and broker2pg
  4. show live progress until new has caught up, pause the load, wait for a marker row, run verify
  5. arm the reverse flow (pg2broker --from new, broker2pg --from new --to old), resume the load,
     pgtandem switch --from old --to new under it, let clients write on new for a few seconds (their
     writes reach old through the reverse flow), roll back with pgtandem switch --from new --to old,
     stop the load, wait for a marker row and verify again
  6. print a summary (each switch's write pause and steps, client transactions, failed ones and the
     longest latency around each switch) and write <dir>/report.html with charts of lag and throughput
     and the timeline of each switch, plus each switch's own page <dir>/switch-*.html
Exit status 1 when verify finds a difference or a client transaction failed. Ctrl-C stops everything
it started. With --keep, everything stays running after the summary and <dir>/pgtandem.yaml lets you
try the other commands by hand, pgtandem switch included, until Ctrl-C.`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{"config": "none"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Out, opts.Command = a.stdout, os.Args[0]
			_, err := demo.Run(cmd.Context(), opts)
			if err != nil && cmd.Context().Err() != nil {
				return &exitError{code: 130, err: fmt.Errorf("demo interrupted: %w", err)}
			}
			var de *demo.DifferentError
			var fe *demo.FailedTransactionsError
			if errors.As(err, &de) || errors.As(err, &fe) {
				return &exitError{code: 1, err: err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "dir", ".cache/demo", "folder for servers, broker data, log and report (deleted at start)")
	f.IntVar(&opts.LoadSeconds, "load-seconds", 45, "how long the write load runs on old before the first verify, copy included")
	f.IntVar(&opts.Scale, "scale", 30, "pgbench scale factor of the sample database (100,000 accounts each)")
	f.IntVar(&opts.Rate, "rate", 100, "write load in transactions per second (about 9 rows each)")
	f.BoolVar(&opts.Keep, "keep", false, "leave everything running after the summary, write <dir>/pgtandem.yaml, wait for Ctrl-C")
	return cmd
}
