package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/pgtandem/pgtandem/bootstrap"
)

// Cluster names of the rehearsal, as in the written pgtandem.yaml.
const (
	oldCluster = "old"
	newCluster = "new"
	oldMajor   = 15
	newMajor   = 17
)

// Options of a rehearsal. Zero fields take the defaults of `make demo`.
type Options struct {
	// Dir holds everything the run creates: servers, broker data, log,
	// report. It is deleted at the start of a run (only if it is empty or
	// a previous demo's folder). Default .cache/demo.
	Dir string
	// LoadSeconds is how long the write load runs on old, from before the
	// copy until it is paused for the first verify. Default 45. The switch
	// and rollback that follow add about seven seconds of load.
	LoadSeconds int
	// Scale is pgbench's scale factor: 100,000 accounts per unit. Default 30.
	Scale int
	// Rate is the load in transactions per second, each changing about 9
	// rows. Default 100.
	Rate int
	// Keep leaves servers, broker and pipeline running after the summary,
	// writes Dir/pgtandem.yaml, and waits for ctx to end.
	Keep bool
	// Out receives the live status and the summary.
	Out io.Writer
	// Command is how the printed hints invoke pgtandem. Default pgtandem.
	Command string
}

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		o.Dir = filepath.Join(".cache", "demo")
	}
	if o.LoadSeconds == 0 {
		o.LoadSeconds = 45
	}
	if o.Scale == 0 {
		o.Scale = 30
	}
	if o.Rate == 0 {
		o.Rate = 100
	}
	if o.Command == "" {
		o.Command = "pgtandem"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.LoadSeconds < 5 || o.Scale < 1 || o.Rate < 1 {
		return o, fmt.Errorf("demo: load seconds %d (at least 5), scale %d and rate %d (at least 1)", o.LoadSeconds, o.Scale, o.Rate)
	}
	dir, err := filepath.Abs(o.Dir)
	o.Dir = dir
	return o, err
}

// Summary is what a rehearsal measured; report.html shows it with charts.
type Summary struct {
	Started  time.Time
	Took     time.Duration
	Scale    int
	Rate     int
	CopyTook time.Duration
	// CopyRows, CopyBytes and CopyTables are what init copied.
	CopyRows   int64
	CopyBytes  int64
	CopyTables int
	// CatchUp is the time from the start of apply until the lag first fell
	// under caughtUpLag, that is until new had applied what old wrote
	// during the copy.
	CatchUp time.Duration
	// LagP50 and LagP99 are over the samples while in tandem under load.
	LagP50, LagP99 time.Duration
	// LoadTransactions ran on old until the load paused; all reached new
	// before verify.
	LoadTransactions int64
	LoadRows         int64
	// Verify compares old and new once the load paused, before the switch;
	// FinalVerify after the rollback, once the load stopped.
	Verify, FinalVerify VerifyResult
	// Switches are the switch to new and the rollback to old, in order.
	Switches []*SwitchResult
	// SwitchLoadTransactions ran through PgBouncer from when the load
	// resumed for the switches until it stopped; FailedTransactions failed
	// over the whole rehearsal (clients only wait during a switch: 0).
	SwitchLoadTransactions int64
	FailedTransactions     int64
	// Downstream is what the downstream consumer (package cursor) read
	// across the switch and the rollback.
	Downstream DownstreamResult
	// Samples and the phase boundaries (since the load started) feed the
	// charts.
	Samples                  []Sample
	CopyEnd, CaughtUp        time.Duration
	LoadPaused               time.Duration
	LoadResumed, LoadStopped time.Duration
	Dir, Report, Log         string
}

// VerifyResult is what one verify found.
type VerifyResult struct {
	Equal  bool
	Tables int
	Rows   int64
	Took   time.Duration
	// Different names the tables verify found different.
	Different []string
}

// DifferentError is returned when verify finds the clusters different after
// the rehearsal: a bug in pgtandem worth reporting with Dir/demo.log.
type DifferentError struct{ Tables []string }

func (e *DifferentError) Error() string {
	return fmt.Sprintf("verify found old and new different in %v: please report this with demo.log", e.Tables)
}

// FailedTransactionsError is returned when client transactions failed
// during the rehearsal: a switch must only make them wait.
type FailedTransactionsError struct{ Failed int64 }

func (e *FailedTransactionsError) Error() string {
	return fmt.Sprintf("%d client transactions failed (the first are in demo.log): please report this with demo.log", e.Failed)
}

// caughtUpLag is the lag under which new counts as following old.
const caughtUpLag = time.Second

// Run performs the rehearsal described in the package documentation.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := resetDir(opts.Dir); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(opts.Dir, "demo.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sum := &Summary{Started: time.Now(), Scale: opts.Scale, Rate: opts.Rate, Dir: opts.Dir,
		Report: filepath.Join(opts.Dir, "report.html"), Log: logFile.Name()}
	fmt.Fprintf(opts.Out, "pgtandem demo: upgrade rehearsal PostgreSQL %d -> %d in %s (log: demo.log)\n", oldMajor, newMajor, opts.Dir)

	defer func() {
		if ctx.Err() != nil {
			fmt.Fprintln(opts.Out, "interrupted: stopped everything the demo had started")
		}
	}()
	env, err := startEnvironment(ctx, opts.Dir, log)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Out, "  started PostgreSQL %d (old), %d (new), PgBouncer in front of old (port %d) and the broker (%s)\n",
		oldMajor, newMajor, env.bouncer.Port, env.brokerURL)
	err = rehearse(ctx, opts, env, sum, log)
	if err == nil && opts.Keep {
		err = keepRunning(ctx, opts, env)
	}
	if cerr := env.close(); err == nil {
		err = cerr
	}
	return sum, err
}

// rehearse runs the steps from the sample database to the final verify
// and writes the summary and reports.
func rehearse(ctx context.Context, opts Options, env *environment, sum *Summary, log *slog.Logger) error {
	fmt.Fprintf(opts.Out, "  creating sample database %q on old: pgbench --initialize --scale %d and 5 sample tables...\n", appDatabase, opts.Scale)
	start := time.Now()
	if err := createSampleDatabase(ctx, env.old, env.new, opts.Scale); err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "  created in %s; starting a write load of %d transactions/s through PgBouncer on old for %ds\n", fmtDuration(time.Since(start)), opts.Rate, opts.LoadSeconds)
	load := newLoad(env.clientDSN(), opts.Scale, opts.Rate, log.With("component", "load"))
	if err := load.start(ctx); err != nil {
		return err
	}
	defer load.stop()
	mon := startMonitor(opts.Out, load, flow{writer: oldCluster, follower: newCluster, followerDSN: env.new.DSN(appDatabase)})
	defer mon.stop()
	loadEnd := mon.started.Add(time.Duration(opts.LoadSeconds) * time.Second)

	res, err := bootstrap.Copy(ctx, bootstrap.Config{Source: oldCluster, SourceDSN: env.old.DSN(appDatabase),
		TargetDSN: env.new.DSN(appDatabase), Topic: env.topic, Jobs: 2, Progress: mon.copyProgress}, log)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	sum.CopyTook, sum.CopyTables, sum.CopyEnd = res.Took, len(res.Tables), time.Since(mon.started)
	for _, t := range res.Tables {
		sum.CopyRows += t.Rows
		sum.CopyBytes += t.Bytes
	}
	mon.setCopyLine("")
	mon.step("init copied %d rows (%.1f MB) of %d tables in %s, %.0f rows/s; handoff LSN %s",
		sum.CopyRows, float64(sum.CopyBytes)/1e6, sum.CopyTables, fmtDuration(sum.CopyTook), float64(sum.CopyRows)/sum.CopyTook.Seconds(), res.HandoffLSN)

	mon.setPhase(PhaseCatchUp)
	pipe, err := env.startPipeline(ctx, log)
	if err != nil {
		return err
	}
	mon.step("pg2broker and broker2pg started: old -> %s -> new", env.topic)
	// A failed service cancels pipe.ctx: its error is the one to report.
	failed := func(err error) error {
		if perr := pipe.stopIfFailed(); perr != nil {
			return perr
		}
		return err
	}
	if err := follow(pipe.ctx, opts, env, load, mon, sum, loadEnd); err != nil {
		return failed(err)
	}
	if sum.Verify, err = runVerify(pipe.ctx, env); err != nil {
		return failed(err)
	}
	mon.step("verify: %s (%s)", sum.Verify.verdict(), fmtDuration(sum.Verify.Took))
	if sum.Verify.Equal {
		if err := switchUnderLoad(pipe.ctx, opts, env, load, mon, sum, log); err != nil {
			return failed(err)
		}
		if sum.FinalVerify, err = runVerify(pipe.ctx, env); err != nil {
			return failed(err)
		}
	}
	sum.Samples = mon.stop()
	sum.LagP50, sum.LagP99 = lagPercentiles(sum.Samples)
	sum.FailedTransactions = load.failures()
	sum.Took = time.Since(sum.Started)
	if err := writeSwitchReports(sum); err != nil {
		return err
	}
	printSummary(opts.Out, sum)
	if err := writeReport(sum.Report, sum); err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "\nreport: %s (open it in any browser)\n", sum.Report)
	for _, v := range []VerifyResult{sum.Verify, sum.FinalVerify} {
		if !v.Equal {
			return &DifferentError{Tables: v.Different}
		}
	}
	if sum.FailedTransactions > 0 {
		return &FailedTransactionsError{Failed: sum.FailedTransactions}
	}
	if d := sum.Downstream; len(sum.Switches) > 0 && (d.Duplicates+d.OutOfOrder+d.Missing > 0 || len(d.Hops) != len(sum.Switches)) {
		return &DownstreamError{Result: d}
	}
	return nil
}

// DownstreamError reports a downstream consumer that did not read the
// stream exactly once across the switches.
type DownstreamError struct{ Result DownstreamResult }

func (e *DownstreamError) Error() string {
	return "the downstream consumer did not read every change once in order across the switches: " + e.Result.String()
}
