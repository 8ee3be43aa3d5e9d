package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	switchover "github.com/pgtandem/pgtandem/switch"
	"github.com/pgtandem/pgtandem/verify"
)

// runVerify compares old and new with pgtandem verify's engine.
func runVerify(ctx context.Context, env *environment) (VerifyResult, error) {
	cfg := verify.DefaultConfig()
	cfg.SourceDSN, cfg.TargetDSN, cfg.Jobs = env.old.DSN(appDatabase), env.new.DSN(appDatabase), 2
	start := time.Now()
	report, err := verify.Run(ctx, cfg, nil)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify: %w", err)
	}
	v := VerifyResult{Took: time.Since(start), Equal: report.Equal(), Tables: len(report.Tables)}
	for _, t := range report.Tables {
		v.Rows += t.SourceRows
		if t.Status != verify.StatusEqual {
			v.Different = append(v.Different, t.Table)
		}
	}
	return v, nil
}

// verdict is the one-line verify result of the summary and the report.
func (v VerifyResult) verdict() string {
	if v.Equal {
		return fmt.Sprintf("equal: %d tables, %d rows, schema identical", v.Tables, v.Rows)
	}
	return fmt.Sprintf("DIFFERENT in %d tables: %v", len(v.Different), v.Different)
}

// finalVerify is the verify that concludes the rehearsal: after the
// rollback, or the first when it found a difference and no switch ran.
func (s *Summary) finalVerify() VerifyResult {
	if len(s.Switches) == 0 {
		return s.Verify
	}
	return s.FinalVerify
}

// summaryRow is one figure of the summary; the text summary prints Detail
// under it, one line each.
type summaryRow struct {
	Name, Value string
	Detail      []string
}

// summaryRows are the figures of the summary, in the order shown.
func (s *Summary) summaryRows() []summaryRow {
	rows := []summaryRow{
		{Name: "upgrade", Value: fmt.Sprintf("PostgreSQL %d -> %d, pgbench scale %d, load %d transactions/s through PgBouncer", oldMajor, newMajor, s.Scale, s.Rate)},
		{Name: "initial copy", Value: fmt.Sprintf("%d rows, %.1f MB, %d tables in %s (%.0f rows/s)", s.CopyRows, float64(s.CopyBytes)/1e6, s.CopyTables, fmtDuration(s.CopyTook), float64(s.CopyRows)/max(s.CopyTook.Seconds(), 0.001))},
		{Name: "catch-up", Value: fmt.Sprintf("%s from the start of apply to a lag under %s", fmtDuration(s.CatchUp), caughtUpLag)},
		{Name: "lag in tandem", Value: fmt.Sprintf("p50 %s, p99 %s", s.LagP50.Round(time.Millisecond), s.LagP99.Round(time.Millisecond))},
		{Name: "load", Value: fmt.Sprintf("%d transactions, %d rows changed on old, all applied on new", s.LoadTransactions, s.LoadRows)},
		{Name: "verify", Value: fmt.Sprintf("%s (%s)", s.Verify.verdict(), fmtDuration(s.Verify.Took))},
	}
	for _, res := range s.Switches {
		r := res.Report
		rows = append(rows, summaryRow{Name: res.title(),
			Value: fmt.Sprintf("%s -> %s under load: write pause %s; client transactions around it: %d, %d failed, longest %s (median %s)",
				r.From, r.To, fmtMs(r.Pause), res.Transactions, res.Failed, fmtMs(res.LongestLatency), fmtMs(res.MedianLatency)),
			Detail: stepLines(r)})
	}
	if len(s.Switches) > 0 {
		rows = append(rows,
			summaryRow{Name: "clients", Value: fmt.Sprintf("%d transactions through PgBouncer from the load's restart to its stop, %d failed in the whole rehearsal", s.SwitchLoadTransactions, s.FailedTransactions)},
			summaryRow{Name: "downstream", Value: "a consumer of the topics (package cursor): " + s.Downstream.String()},
			summaryRow{Name: "final verify", Value: fmt.Sprintf("%s, after the rollback (%s)", s.FinalVerify.verdict(), fmtDuration(s.FinalVerify.Took))})
	}
	return append(rows, summaryRow{Name: "total", Value: fmtDuration(s.Took)})
}

// stepLines is a switch's timeline: each step's start from the fence, its
// duration and what it did.
func stepLines(r *switchover.Report) []string {
	var lines []string
	for _, st := range r.Steps {
		line := fmt.Sprintf("%-10s +%-7s %s", st.Step, fmtMs(st.Start.Sub(r.PauseStart)), fmtMs(st.Duration()))
		if st.Detail != "" {
			line += "  " + st.Detail
		}
		lines = append(lines, line)
	}
	return lines
}

func printSummary(w io.Writer, s *Summary) {
	fmt.Fprintln(w, "\nsummary")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range s.summaryRows() {
		fmt.Fprintf(tw, "  %s\t%s\n", r.Name, r.Value)
		for _, d := range r.Detail {
			fmt.Fprintf(tw, "  \t  %s\n", d)
		}
	}
	tw.Flush()
	for _, res := range s.Switches {
		fmt.Fprintf(w, "  %s report: %s\n", res.title(), res.ReportFile)
	}
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
switch:
  fence: [pgbouncer, database]
  max-lag: %s
  pgbouncer:
    admin: [%q]
    database: %s
    databases-file: %q
`, oldCluster, env.old.DSN(appDatabase), newCluster, env.new.DSN(appDatabase), env.brokerURL, env.adminURL, topicPrefix,
		demoMaxLag, env.bouncer.AdminDSN(), appDatabase, env.bouncer.DatabasesFile())
	path := configPath(opts.Dir)
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, `
--keep: everything stays running until Ctrl-C, pg2broker and broker2pg both ways included (in this process).
  old (PostgreSQL %[1]d)  %[2]s
  new (PostgreSQL %[3]d)  %[4]s
  clients (PgBouncer) %[9]s, now in front of old again
  broker              %[5]s (admin API %[6]s)
  config              %[7]s

Try, from another terminal:
  psql "%[9]s" -c "INSERT INTO pgbench_branches VALUES (1000, 0)"
  %[8]s --config %[7]s status
  %[8]s --config %[7]s verify --from old --to new
  %[8]s --config %[7]s switch --from old --to new --dry-run
`, oldMajor, env.old.DSN(appDatabase), newMajor, env.new.DSN(appDatabase), env.brokerURL, env.adminURL, path, opts.Command,
		env.clientDSN())
	select {
	case <-ctx.Done():
		return nil
	case <-env.pipe.ctx.Done():
		return env.pipe.stopIfFailed()
	}
}
