package demo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// How long the load runs in each part of the switch phase: on old through
// PgBouncer before the switch (its pool warm again), on new before the
// rollback (long enough to see its writes reach old), on old again before
// it stops.
const (
	beforeSwitch  = 1500 * time.Millisecond
	onNew         = 4 * time.Second
	afterRollback = 1500 * time.Millisecond
)

// latencyMargin widens a switch's write pause to the transactions counted
// around it: those running at some moment within it of the pause.
const latencyMargin = time.Second

// SwitchResult is one switch of the rehearsal and what its clients saw.
type SwitchResult struct {
	// Report is what pgtandem switch reports: steps, write pause, marker.
	Report *switchover.Report
	// At is the start of the write pause, since the load started.
	At time.Duration
	// Transactions and Failed count the client transactions that ran
	// within latencyMargin of the pause; LongestLatency is the longest of
	// them, from when it was due to start until it ended, and MedianLatency
	// their median.
	Transactions   int
	Failed         int
	LongestLatency time.Duration
	MedianLatency  time.Duration
	// WaitedFrom and WaitedTo bound the longest of the transactions that
	// ran during the pause, and so waited for it: from when it was due to
	// when it ended.
	WaitedFrom, WaitedTo time.Time
	// ReportFile is the switch's own page, Report.HTML.
	ReportFile string
}

// Rollback reports whether the switch went back to old.
func (r *SwitchResult) Rollback() bool { return r.Report.To == oldCluster }

// title names the switch in the summary: "switch" or "rollback".
func (r *SwitchResult) title() string {
	if r.Rollback() {
		return "rollback"
	}
	return "switch"
}

// switchUnderLoad is the maintenance window rehearsed: the reverse flow
// armed, the load started again through PgBouncer, a switch from old to
// new and a rollback to old under it, the load stopped and a marker waited
// for, so that old and new can be verified equal.
func switchUnderLoad(ctx context.Context, opts Options, env *environment, load *writeLoad, mon *monitor, sum *Summary, log *slog.Logger) error {
	if err := env.armReverse(ctx); err != nil {
		return err
	}
	mon.step("reverse flow armed: pg2broker --from new (slot created), broker2pg --from new --to old; idle until the switch")
	// The load is paused: the switch phase's transactions are the ones
	// after this, which the downstream consumer must all read.
	lastBefore, err := lastLoadTxn(ctx, env)
	if err != nil {
		return err
	}
	before, _ := load.committed()
	if err := load.start(ctx); err != nil {
		return err
	}
	sum.LoadResumed = time.Since(mon.started)
	mon.setPhase(PhaseSwitch)
	mon.step("load resumed through PgBouncer (transaction pooling) in front of old")
	for _, step := range []func() error{
		func() error { return sleep(ctx, beforeSwitch) },
		func() error { return runSwitch(ctx, env, oldCluster, newCluster, mon, sum, log) },
		func() error { return sleep(ctx, onNew) },
		func() error { return runSwitch(ctx, env, newCluster, oldCluster, mon, sum, log) },
		func() error { return sleep(ctx, afterRollback) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	load.stop()
	sum.LoadStopped = time.Since(mon.started)
	after, _ := load.committed()
	sum.SwitchLoadTransactions, sum.FailedTransactions = after-before, load.failures()
	mon.setPhase(PhaseDrain)
	var longest []string
	for _, res := range sum.Switches {
		res.measureClients(load)
		longest = append(longest, fmt.Sprintf("%s around the %s", fmtMs(res.LongestLatency), res.title()))
	}
	mon.step("load stopped: %d client transactions since it resumed, %d failed; longest %s", sum.SwitchLoadTransactions, sum.FailedTransactions, strings.Join(longest, ", "))
	if err := waitMarker(ctx, opts, env, mon, sum, 2); err != nil {
		return err
	}
	return checkDownstream(ctx, env, mon, sum, lastBefore)
}

// lastLoadTxn is the highest load transaction number old holds.
func lastLoadTxn(ctx context.Context, env *environment) (int64, error) {
	conn, err := pgx.Connect(ctx, env.old.DSN(appDatabase))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var last int64
	err = conn.QueryRow(ctx, `SELECT coalesce(max(txn), 0) FROM load_ticks`).Scan(&last)
	return last, err
}

// checkDownstream waits until the downstream consumer has read every load
// transaction of the switch phase (those after lastBefore, on old now),
// or downstreamTimeout, and records what it saw.
func checkDownstream(ctx context.Context, env *environment, mon *monitor, sum *Summary, lastBefore int64) error {
	conn, err := pgx.Connect(ctx, env.old.DSN(appDatabase))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT txn FROM load_ticks WHERE txn > $1`, lastBefore)
	if err != nil {
		return err
	}
	txns, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, downstreamTimeout)
	defer cancel()
	_ = poll(waitCtx, 50*time.Millisecond, func() (bool, error) { return env.downstream.missing(txns) == 0, nil })
	if ctx.Err() != nil {
		return ctx.Err()
	}
	sum.Downstream = env.downstream.result()
	sum.Downstream.Missing = env.downstream.missing(txns)
	mon.step("downstream consumer: %s", sum.Downstream)
	return nil
}

// downstreamTimeout bounds the wait for the downstream consumer to read
// the last transactions.
const downstreamTimeout = time.Minute

// runSwitch runs pgtandem switch from one cluster to the other, in-process,
// and points the monitor at where the load writes now.
func runSwitch(ctx context.Context, env *environment, from, to string, mon *monitor, sum *Summary, log *slog.Logger) error {
	client, err := pulsarclient.New(pulsarclient.Options{URL: env.brokerURL, Log: log})
	if err != nil {
		return err
	}
	defer client.Close()
	admin, err := pulsarclient.NewAdmin(env.adminURL, "", pulsarclient.TLS{})
	if err != nil {
		return err
	}
	rep, err := switchover.Run(ctx, env.switchConfig(from, to), switchover.Options{Pulsar: client, Admin: admin}, log.With("component", "switch"))
	if rep != nil {
		// Its steps are logged as they end.
		log.Info("switch ended", "switch", rep.SwitchID, "from", from, "to", to, "outcome", rep.Outcome, "pause", rep.Pause, "err", err)
	}
	if err != nil {
		return fmt.Errorf("pgtandem switch --from %s --to %s: %w (see %s)", from, to, err, sum.Log)
	}
	mon.setFlow(flow{writer: to, follower: from, followerDSN: env.server(from).DSN(appDatabase)})
	res := &SwitchResult{Report: rep, At: rep.PauseStart.Sub(mon.started)}
	sum.Switches = append(sum.Switches, res)
	mon.step("%s %s -> %s under load: write pause %s (%s); clients write on %s", res.title(), from, to, fmtMs(rep.Pause), stepDurations(rep), to)
	return nil
}

// measureClients counts the client transactions around the switch's pause
// and finds the longest.
func (r *SwitchResult) measureClients(load *writeLoad) {
	txns := load.clientTxns(r.Report.PauseStart.Add(-latencyMargin), r.Report.PauseEnd.Add(latencyMargin))
	var latencies []time.Duration
	for _, x := range txns {
		if x.Failed {
			r.Failed++
			continue
		}
		latencies = append(latencies, x.latency())
		inPause := !x.End.Before(r.Report.PauseStart) && !x.Scheduled.After(r.Report.PauseEnd)
		if inPause && x.latency() > r.WaitedTo.Sub(r.WaitedFrom) {
			r.WaitedFrom, r.WaitedTo = x.Scheduled, x.End
		}
	}
	r.Transactions = len(txns)
	if len(latencies) > 0 {
		slices.Sort(latencies)
		r.LongestLatency, r.MedianLatency = latencies[len(latencies)-1], latencies[len(latencies)/2]
	}
}

// switchConfig is the switch from one cluster to the other as an operator
// configures it: PgBouncer paused and the database fenced, PgBouncer
// redirected.
func (env *environment) switchConfig(from, to string) switchover.Config {
	cfg := switchover.DefaultConfig()
	cfg.From = switchover.Cluster{Name: from, DSN: env.server(from).DSN(appDatabase), Topic: env.topicOf(from)}
	cfg.To = switchover.Cluster{Name: to, DSN: env.server(to).DSN(appDatabase), Topic: env.topicOf(to)}
	cfg.Fence = []string{switchover.FencePgBouncer, switchover.FenceDatabase}
	cfg.PgBouncer = switchover.PgBouncerConfig{Admin: []string{env.bouncer.AdminDSN()}, Database: appDatabase, DatabasesFile: env.bouncer.DatabasesFile()}
	cfg.MaxLag = demoMaxLag
	cfg.PrepareSubscriptions = true // the downstream consumer's, on the target's topic
	return cfg
}

// demoMaxLag is the switch's max-lag in the demo: on two cores running
// both servers, the broker, four services and the load, a marker can take
// more than the default second.
const demoMaxLag = 5 * time.Second

func (env *environment) topicOf(cluster string) string {
	if cluster == newCluster {
		return env.reverseTopic
	}
	return env.topic
}

func (env *environment) server(cluster string) *pglocal.Server {
	if cluster == newCluster {
		return env.new
	}
	return env.old
}

// stepDurations lists each step of a switch with its duration.
func stepDurations(rep *switchover.Report) string {
	var parts []string
	for _, s := range rep.Steps {
		parts = append(parts, s.Step+" "+fmtMs(s.Duration()))
	}
	return strings.Join(parts, ", ")
}

// fmtMs shows a short duration in milliseconds, as the switch's report
// does.
func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000)
}

// writeSwitchReports writes each switch's own page next to report.html.
func writeSwitchReports(s *Summary) error {
	for i, res := range s.Switches {
		res.ReportFile = filepath.Join(s.Dir, fmt.Sprintf("switch-%d-%s-to-%s.html", i+1, res.Report.From, res.Report.To))
		if err := os.WriteFile(res.ReportFile, res.Report.HTML(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
