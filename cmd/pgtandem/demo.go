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
		Short: "Run a local upgrade rehearsal from PostgreSQL 15 to 17 with the built-in broker",
		Long: `Run a whole upgrade rehearsal on this machine:
  1. start PostgreSQL 15 ("old") and 17 ("new") in --dir (deleted first), and the built-in broker
  2. create a sample application database (pgbench tables and a few more) and run a write load on old
  3. pgtandem init (consistent copy old -> new) under that load, then pg2broker and broker2pg
  4. show live progress until new has caught up, pause the load, wait for a marker row, run verify
  5. print a summary and write <dir>/report.html with charts of lag and throughput
Ctrl-C stops everything it started. With --keep, everything stays running after the summary and
<dir>/pgtandem.yaml lets you try the other commands by hand until Ctrl-C.`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{"config": "none"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Out, opts.Command = a.stdout, os.Args[0]
			_, err := demo.Run(cmd.Context(), opts)
			if err != nil && cmd.Context().Err() != nil {
				return &exitError{code: 130, err: fmt.Errorf("demo interrupted: %w", err)}
			}
			var de *demo.DifferentError
			if errors.As(err, &de) {
				return &exitError{code: 1, err: err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "dir", ".cache/demo", "folder for servers, broker data, log and report (deleted at start)")
	f.IntVar(&opts.LoadSeconds, "load-seconds", 45, "how long the write load runs on old, copy included")
	f.IntVar(&opts.Scale, "scale", 30, "pgbench scale factor of the sample database (100,000 accounts each)")
	f.IntVar(&opts.Rate, "rate", 100, "write load in transactions per second (about 9 rows each)")
	f.BoolVar(&opts.Keep, "keep", false, "leave everything running after the summary, write <dir>/pgtandem.yaml, wait for Ctrl-C")
	return cmd
}
