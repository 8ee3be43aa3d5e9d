package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/internal/config"
	switchover "github.com/pgtandem/pgtandem/switch"
	"github.com/pgtandem/pgtandem/verify"
)

// Exit codes of pgtandem switch.
const (
	exitSwitchRefused = 2 // preflight refused or bad input: nothing changed
	exitSwitchUndone  = 3 // failed or past the deadline, undone: clients on the source
	exitSwitchStuck   = 4 // the undo failed too, or clients are not all resumed: act now
	exitSwitchNoCut   = 5 // clients on --to, the cut for consumers not recorded yet: --resume
)

// killAfterEnv names a step after which pgtandem switch kills itself with
// SIGKILL once the step is journaled: the fault the kill -9 suite injects.
const killAfterEnv = "PGTANDEM_SWITCH_KILL_AFTER"

func newSwitchCmd(a *app) *cobra.Command {
	var d direction
	var resume, abort, dryRun, runVerify, asJSON bool
	var reportFile string
	cmd := &cobra.Command{
		Use:   "switch --from CLUSTER --to CLUSTER [--dry-run | --resume | --abort]",
		Short: "Move clients from one cluster to the other in a write pause well under a second; rollback is the same command reversed",
		Long: `switch moves the clients' writes from --from to --to while both directions of pgtandem run
(pg2broker and broker2pg each way). After a preflight that changes nothing for clients, it fences
--from (switch.fence: PAUSE on every PgBouncer, a read-only database, an operator hook), writes a
marker on --from and waits until broker2pg applied it on --to, sets every sequence of --to exactly
as on --from, points PgBouncer at --to (switch.redirect) and RESUMEs. The write pause lasts from
the fence to the RESUME; queued client transactions then run on --to.

Every step is journaled on both clusters (pgtandem.switch_steps). Past switch.deadline before the
RESUME, or on any failure before it, the switch undoes itself: clients continue on --from, nothing
is lost. A switch whose process died is finished with --resume or undone with --abort (only before
the RESUME, the point of no return). Roll back with the same command, --from and --to swapped.

After the RESUME the switch finds its cut in --to's topic and records it for downstream consumers
(pgtandem.cursor; with switch.cursor-prepare, pgtandem cursor prepare too). See docs/consumers.md.

Exit status: 0 done, 2 refused (nothing changed), 3 undone (clients on --from), 4 clients may still
be paused or only partly resumed: run --resume or --abort as the message says; 5 clients write on
--to but the cut is not recorded for consumers yet: run --resume; 1 other errors. See docs/runbook.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, true); err != nil {
				return &exitError{exitSwitchRefused, err}
			}
			modes := 0
			for _, on := range []bool{resume, abort, dryRun} {
				if on {
					modes++
				}
			}
			if modes > 1 {
				return &exitError{exitSwitchRefused, errors.New("--dry-run, --resume and --abort exclude each other")}
			}
			cfg, err := switchConfig(a.cfg, d.from, d.to, func(cl config.Cluster) (string, error) { return clusterTopic(cmd.Context(), a.cfg, cl) })
			if err != nil {
				return &exitError{exitSwitchRefused, err}
			}
			clients, err := newPulsarClients(a, cfg.PrepareSubscriptions)
			if err != nil {
				return &exitError{exitSwitchRefused, err}
			}
			defer clients.close()
			opts := switchover.Options{AfterStep: killAfter(os.Getenv(killAfterEnv)), Pulsar: clients.client, Admin: clients.admin}
			if runVerify {
				opts.Verify = func(ctx context.Context) error { return verifyClusters(ctx, cfg) }
			}
			run := switchover.Run
			switch {
			case resume:
				run = switchover.Resume
			case abort:
				run = switchover.Abort
			case dryRun:
				run = switchover.DryRun
			}
			rep, err := run(cmd.Context(), cfg, opts, a.log)
			if rep != nil {
				if err != nil {
					rep.Error = err.Error()
				}
				if perr := printSwitchReport(a, rep, asJSON, reportFile); perr != nil && err == nil {
					err = perr
				}
			}
			return switchExit(err)
		},
	}
	d.flags(cmd, true)
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "run the preflight and every read path and probe that fences nothing, and print the expected pause")
	f.BoolVar(&resume, "resume", false, "finish the switch recorded as running (its process died)")
	f.BoolVar(&abort, "abort", false, "undo the switch recorded as running, if it has not resumed clients on --to yet")
	f.BoolVar(&runVerify, "verify", false, "run pgtandem verify first and refuse on any difference")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&reportFile, "report", "", "also write the report as an HTML page with a timeline to this file")
	return cmd
}

// switchConfig builds the switch's typed configuration from the loaded one.
// topicOf names a cluster's topic: clusterTopic, which may ask the cluster
// its major version; tests give their own.
func switchConfig(c config.Config, from, to string, topicOf func(config.Cluster) (string, error)) (switchover.Config, error) {
	cfg := switchover.DefaultConfig()
	sw := c.Switch
	cfg.Fence, cfg.Redirect = sw.Fence, sw.Redirect
	cfg.PgBouncer = switchover.PgBouncerConfig{Admin: sw.PgBouncer.Admin, Database: sw.PgBouncer.Database, DatabasesFile: sw.PgBouncer.DatabasesFile}
	cfg.Hooks = switchover.Hooks{Fence: sw.Hooks.Fence, Unfence: sw.Hooks.Unfence, Redirect: sw.Hooks.Redirect}
	cfg.Deadline, cfg.PauseTimeout, cfg.MaxLag, cfg.MaxTransactionAge, cfg.ProbeTimeout =
		sw.Deadline, sw.PauseTimeout, sw.MaxLag, sw.MaxTransactionAge, sw.ProbeTimeout
	cfg.PrepareSubscriptions, cfg.CursorSubscriptions = sw.CursorPrepare, sw.CursorSubscriptions
	for _, side := range []struct {
		name string
		dst  *switchover.Cluster
	}{{from, &cfg.From}, {to, &cfg.To}} {
		cl, err := c.Cluster(side.name)
		if err != nil {
			return cfg, err
		}
		*side.dst = switchover.Cluster{Name: side.name, DSN: cl.DSN.ConnString(), Topic: cl.Topic}
		if cl.PgBouncerEntry != "" {
			entry, err := switchover.EntryFromDSN(cl.PgBouncerEntry)
			if err != nil {
				return cfg, &config.Error{Key: "clusters." + side.name + ".pgbouncer-entry", Reason: err.Error()}
			}
			side.dst.Entry = entry
		}
	}
	// Bad input is refused before any cluster is asked for its topic.
	check := cfg
	for _, side := range []*switchover.Cluster{&check.From, &check.To} {
		if side.Topic == "" {
			side.Topic = "unresolved"
		}
	}
	if err := check.Validate(); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	for _, side := range []*switchover.Cluster{&cfg.From, &cfg.To} {
		if side.Topic != "" {
			continue
		}
		cl, _ := c.Cluster(side.Name)
		topic, err := topicOf(cl)
		if err != nil {
			return cfg, fmt.Errorf("cluster %s: %w", side.Name, err)
		}
		side.Topic = topic
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// verifyClusters runs pgtandem verify between the two sides.
func verifyClusters(ctx context.Context, cfg switchover.Config) error {
	vc := verify.DefaultConfig()
	vc.SourceDSN, vc.TargetDSN = cfg.From.DSN, cfg.To.DSN
	report, err := verify.Run(ctx, vc, nil)
	if err != nil {
		return err
	}
	if !report.Equal() {
		return fmt.Errorf("pgtandem verify found %s and %s different; run pgtandem verify --from %s --to %s for the rows", cfg.From.Name, cfg.To.Name, cfg.From.Name, cfg.To.Name)
	}
	return nil
}

func printSwitchReport(a *app, rep *switchover.Report, asJSON bool, reportFile string) error {
	if reportFile != "" {
		if err := os.WriteFile(reportFile, rep.HTML(), 0o644); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(a.stdout)
}

// switchExit maps the switch's outcome to the exit code.
func switchExit(err error) error {
	if err == nil {
		return nil
	}
	var (
		preflight *switchover.PreflightError
		inProg    *switchover.InProgressError
		nothing   *switchover.NothingToResumeError
		past      *switchover.PastPointOfNoReturnError
		cfgErr    *switchover.ConfigError
		undone    *switchover.UndoneError
		undoFail  *switchover.UndoFailedError
		notRes    *switchover.NotResumedError
		noCut     *switchover.CutNotRecordedError
	)
	switch {
	case errors.As(err, &noCut):
		return &exitError{exitSwitchNoCut, err}
	case errors.As(err, &undoFail), errors.As(err, &notRes):
		return &exitError{exitSwitchStuck, err}
	case errors.As(err, &undone):
		return &exitError{exitSwitchUndone, err}
	case errors.As(err, &preflight), errors.As(err, &inProg), errors.As(err, &nothing), errors.As(err, &past), errors.As(err, &cfgErr):
		return &exitError{exitSwitchRefused, err}
	}
	return err
}

// killAfter returns the AfterStep of the kill -9 suite: SIGKILL to this
// process once the named step is journaled.
func killAfter(step string) func(string) {
	if step == "" {
		return nil
	}
	return func(done string) {
		if done == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Minute) // the signal is on its way
		}
	}
}
