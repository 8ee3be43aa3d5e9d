package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/pgtandem/pgtandem/verify"
)

// runVerify compares old and new with pgtandem verify's engine.
func runVerify(ctx context.Context, opts Options, env *environment, sum *Summary) error {
	cfg := verify.DefaultConfig()
	cfg.SourceDSN, cfg.TargetDSN, cfg.Jobs = env.old.DSN(appDatabase), env.new.DSN(appDatabase), 2
	start := time.Now()
	report, err := verify.Run(ctx, cfg, nil)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	sum.VerifyTook, sum.VerifyEqual, sum.VerifyTables = time.Since(start), report.Equal(), len(report.Tables)
	for _, t := range report.Tables {
		sum.VerifyRows += t.SourceRows
		if t.Status != verify.StatusEqual {
			sum.Different = append(sum.Different, t.Table)
		}
	}
	return nil
}

// verdict is the one-line verify result of the summary and the report.
func (s *Summary) verdict() string {
	if s.VerifyEqual {
		return fmt.Sprintf("equal: %d tables, %d rows, schema identical", s.VerifyTables, s.VerifyRows)
	}
	return fmt.Sprintf("DIFFERENT in %d tables: %v", len(s.Different), s.Different)
}

// summaryRows are the figures of the summary, in the order shown.
func (s *Summary) summaryRows() [][2]string {
	return [][2]string{
		{"upgrade", fmt.Sprintf("PostgreSQL %d -> %d, pgbench scale %d, load %d transactions/s", oldMajor, newMajor, s.Scale, s.Rate)},
		{"initial copy", fmt.Sprintf("%d rows, %.1f MB, %d tables in %s (%.0f rows/s)", s.CopyRows, float64(s.CopyBytes)/1e6, s.CopyTables, fmtDuration(s.CopyTook), float64(s.CopyRows)/max(s.CopyTook.Seconds(), 0.001))},
		{"catch-up", fmt.Sprintf("%s from the start of apply to a lag under %s", fmtDuration(s.CatchUp), caughtUpLag)},
		{"lag in tandem", fmt.Sprintf("p50 %s, p99 %s", s.LagP50.Round(time.Millisecond), s.LagP99.Round(time.Millisecond))},
		{"load", fmt.Sprintf("%d transactions, %d rows changed on old, all applied on new", s.LoadTransactions, s.LoadRows)},
		{"verify", fmt.Sprintf("%s (%s)", s.verdict(), fmtDuration(s.VerifyTook))},
		{"total", fmtDuration(s.Took)},
	}
}

func printSummary(w io.Writer, s *Summary) {
	fmt.Fprintln(w, "\nsummary")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range s.summaryRows() {
		fmt.Fprintf(tw, "  %s\t%s\n", r[0], r[1])
	}
	tw.Flush()
}

func configPath(dir string) string { return filepath.Join(dir, "pgtandem.yaml") }

// keepRunning writes a configuration for the running rehearsal, says how
// to use it, and waits for ctx to end.
func keepRunning(ctx context.Context, opts Options, env *environment) error {
	config := fmt.Sprintf(`# written by pgtandem demo --keep; valid while it runs
clusters:
  %s: { dsn: %q }
  %s: { dsn: %q }
pulsar:
  url: %q
  admin-url: %q
  topic-prefix: %q
`, oldCluster, env.old.DSN(appDatabase), newCluster, env.new.DSN(appDatabase), env.brokerURL, env.adminURL, topicPrefix)
	path := configPath(opts.Dir)
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, `
--keep: everything stays running until Ctrl-C, pg2broker and broker2pg included (in this process).
  old (PostgreSQL %[1]d)  %[2]s
  new (PostgreSQL %[3]d)  %[4]s
  broker              %[5]s (admin API %[6]s)
  config              %[7]s

Try, from another terminal:
  psql "%[2]s" -c "INSERT INTO pgbench_branches VALUES (1000, 0)"
  %[8]s --config %[7]s status
  %[8]s --config %[7]s verify --from old --to new
`, oldMajor, env.old.DSN(appDatabase), newMajor, env.new.DSN(appDatabase), env.brokerURL, env.adminURL, path, opts.Command)
	select {
	case <-ctx.Done():
		return nil
	case <-env.pipe.ctx.Done():
		return env.pipe.stopIfFailed()
	}
}
