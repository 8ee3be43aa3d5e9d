package switchover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/cursor"
	"github.com/pgtandem/pgtandem/event"
)

// Options are the parts of a switch that are not configuration.
type Options struct {
	// Verify, when set, runs before the preflight (pgtandem verify) and
	// refuses the switch when it returns an error.
	Verify func(ctx context.Context) error
	// AfterStep is called once a step's end is journaled, for fault
	// injection in tests (pgtandem's kill -9 suite kills the process there).
	AfterStep func(step string)
	// Pulsar reads To's topic for the cut frame after the RESUME; required.
	Pulsar pulsar.Client
	// Admin creates subscriptions with Config.PrepareSubscriptions.
	Admin pulsaradmin.Client
}

// switcher is one run of Run, Resume, Abort or DryRun.
type switcher struct {
	cfg      Config
	opts     Options
	log      *slog.Logger
	from, to *session
	bouncers []*PgBouncer
	rec      *record
	rep      *Report
	seqNames []string
	// loginRetry is each bouncer's server_login_retry, set to 0 for the
	// window (see PgBouncer.Redirect) and restored after RESUME.
	loginRetry []string
	// resuming is set for --resume and --abort: the journal, not the
	// preflight, says what state things are in.
	resuming bool
	// arrival is where the marker step found the marker applied; seqs
	// the source's sequences it read meanwhile, and seqsSet whether it set
	// them on the target too.
	arrival markerArrival
	seqs    []sequence
	seqsSet bool
	// unjournaled are the step records (starts and ends) the next journal
	// write records, oldest first.
	unjournaled []stepRecord
	// markerLSN is where the fence step wrote the marker, 0 when it did
	// not (see session.fence).
	markerLSN pglogrepl.LSN
}

func open(ctx context.Context, cfg Config, opts Options, log *slog.Logger) (*switcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Pulsar == nil {
		return nil, &ConfigError{Key: "pulsar", Reason: "the switch needs a Pulsar client (Options.Pulsar) to record its cut in " + cfg.To.Topic}
	}
	if cfg.PrepareSubscriptions && opts.Admin == nil {
		return nil, &ConfigError{Key: "cursor-prepare", Reason: "needs the Pulsar admin API (pulsar.admin-url)"}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &switcher{cfg: cfg, opts: opts, log: log, rep: &Report{From: cfg.From.Name, To: cfg.To.Name}}
	var err error
	if s.from, err = connect(ctx, cfg.From); err != nil {
		return nil, &PreflightError{Check: "connect", Detail: err.Error()}
	}
	if s.to, err = connect(ctx, cfg.To); err != nil {
		s.from.close()
		return nil, &PreflightError{Check: "connect", Detail: err.Error()}
	}
	if cfg.usesPgBouncer() {
		for _, dsn := range cfg.PgBouncer.Admin {
			b, _ := NewPgBouncer(dsn) // Validate parsed it
			s.bouncers = append(s.bouncers, b)
		}
	}
	for _, sess := range []*session{s.from, s.to} {
		ok, err := sess.tryLock(ctx)
		if err != nil {
			s.close()
			return nil, err
		}
		if !ok {
			s.close()
			return nil, &InProgressError{Live: true}
		}
	}
	return s, nil
}

func (s *switcher) close() {
	s.from.close()
	s.to.close()
}

// both runs f on the source and the target session at once; each session
// is used by one goroutine only.
func (s *switcher) both(f func(*session) error) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, sess := range []*session{s.from, s.to} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(sess)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// eachBouncer runs f on every PgBouncer at once.
func (s *switcher) eachBouncer(f func(i int, b *PgBouncer) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.bouncers))
	for i, b := range s.bouncers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, b)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Run switches clients from cfg.From to cfg.To: the preflight, then the
// steps from the fence to the RESUME under cfg.Deadline. It returns the
// report with an error that is a *PreflightError or *InProgressError when
// nothing was changed, an *UndoneError when the switch was undone (clients
// continue on the source), an *UndoFailedError when the undo failed too.
func Run(ctx context.Context, cfg Config, opts Options, log *slog.Logger) (rep *Report, err error) {
	s, err := open(ctx, cfg, opts, log)
	if err != nil {
		return nil, err
	}
	defer s.close()
	defer func() {
		if err != nil && s.rep.Outcome == "" {
			s.rep.Outcome = OutcomeRefused // it failed before the fence
		}
	}()
	s.rep.Started = time.Now()
	if err := s.checks(ctx); err != nil {
		return s.rep, err
	}
	toFenced, err := s.to.fenced(ctx)
	if err != nil {
		return s.rep, err
	}
	s.rec = &record{ID: newID(), From: cfg.From.Name, To: cfg.To.Name, StartedAt: time.Now(), ToWasFenced: toFenced,
		Started: map[string]time.Time{}, Ended: map[string]time.Time{}}
	s.rep.SwitchID = s.rec.ID
	if err := s.prepare(ctx); err != nil {
		return s.rep, err
	}
	if err := s.both(func(sess *session) error { return sess.begin(ctx, s.rec) }); err != nil {
		return s.rep, err
	}
	return s.rep, s.steps(ctx)
}

// prepare prepares the statements the steps send in the write pause on
// the session that sends them (see session.prepare).
func (s *switcher) prepare(ctx context.Context) error {
	return s.both(func(sess *session) error {
		if sess == s.from {
			batches := []*pgx.Batch{sess.markerBatch("", nil), readAtFenceBatch(s.seqNames, s.cfg.To.Name, nil, nil)}
			if s.cfg.has(FenceDatabase) {
				batches = append(batches, sess.fenceBatch("", nil))
			}
			return sess.prepare(ctx, batches...)
		}
		return sess.prepare(ctx, lookBatch("", "", []sequence{}),
			sess.cutBatch(&cursor.Mark{}, s.cfg.has(FenceDatabase) && s.rec.ToWasFenced))
	})
}

// Resume finishes the switch recorded as running: past the point of no
// return it only resumes clients on the target; before it, it runs every
// step again from the fence, under a new deadline.
func Resume(ctx context.Context, cfg Config, opts Options, log *slog.Logger) (*Report, error) {
	s, err := openRunning(ctx, cfg, opts, log)
	if s == nil {
		return nil, err
	}
	defer s.close()
	if err != nil {
		return s.rep, err
	}
	if s.rec.resumed() {
		s.rep.PauseStart = s.rec.Started[StepFence]
		if err := s.runStep(ctx, StepResume, s.resume); err != nil {
			s.rep.Outcome = OutcomeNotResumed
			return s.rep, &NotResumedError{SwitchID: s.rec.ID, To: s.cfg.To.Name, Cause: err}
		}
		// The run that died may have left server_login_retry at 0: a
		// RELOAD reads it from the file again (the entry is unchanged).
		if s.cfg.Redirect == RedirectPgBouncer {
			if err := s.eachBouncer(func(_ int, b *PgBouncer) error { return b.Reload(ctx) }); err != nil {
				s.log.Warn("RELOAD after the resume failed; server_login_retry may stay 0 until the next one", "err", err)
			}
		}
		return s.rep, s.finishCursor(ctx)
	}
	if err := s.prepareSequences(ctx); err != nil {
		return s.rep, err
	}
	if err := s.prepare(ctx); err != nil {
		return s.rep, err
	}
	s.rep.PauseStart = s.rec.Started[StepFence]
	return s.rep, s.steps(ctx)
}

// Abort undoes the switch recorded as running, if it has not passed the
// point of no return (*PastPointOfNoReturnError otherwise): PgBouncer
// pointed back at the source, the target fenced again if it was, the
// source unfenced, clients resumed.
func Abort(ctx context.Context, cfg Config, opts Options, log *slog.Logger) (*Report, error) {
	s, err := openRunning(ctx, cfg, opts, log)
	if s == nil {
		return nil, err
	}
	defer s.close()
	if err != nil {
		return s.rep, err
	}
	if s.rec.resumed() {
		return s.rep, &PastPointOfNoReturnError{SwitchID: s.rec.ID}
	}
	s.rep.PauseStart = s.rec.Started[StepFence]
	if s.rep.PauseStart.IsZero() {
		s.rep.PauseStart = time.Now() // it died before the fence
	}
	if err := s.undo(ctx); err != nil {
		s.rep.Outcome = OutcomeUndoFailed
		return s.rep, &UndoFailedError{SwitchID: s.rec.ID, Cause: errors.New("aborted"), UndoErr: err}
	}
	return s.rep, s.end(ctx, StateAborted)
}

// DryRun runs every read path and the probes that fence nothing: the
// preflight (marker round trips both ways, sequences on both sides, the
// PgBouncers' SHOW DATABASES and SHOW POOLS), a journal write rolled back,
// and a timed sequence read, and estimates the pause.
func DryRun(ctx context.Context, cfg Config, opts Options, log *slog.Logger) (*Report, error) {
	s, err := open(ctx, cfg, opts, log)
	if err != nil {
		return nil, err
	}
	defer s.close()
	s.rep.Started = time.Now()
	s.rep.Outcome = OutcomeDryRun
	s.rep.SwitchID = "dry-run"
	if err := s.checks(ctx); err != nil {
		return s.rep, err
	}
	if err := s.both(func(sess *session) error { return sess.journalWritable(ctx) }); err != nil {
		return s.rep, &PreflightError{Check: "journal", Detail: err.Error()}
	}
	start := time.Now()
	seqs, err := s.from.readSequences(ctx, s.seqNames)
	if err != nil {
		return s.rep, err
	}
	s.rep.SequenceRead = time.Since(start)
	s.rep.Sequences = len(seqs)
	// The pause is a PAUSE, a marker's trip, a sequence read and write, a
	// redirect and a RESUME; the journal adds a few commits. The console
	// round trips are measured by the SHOW POOLS of the preflight.
	s.rep.ExpectedPause = s.rep.ForwardProbe + 2*s.rep.SequenceRead + 6*s.consoleRoundTrip(ctx)
	s.rep.Ended = time.Now()
	return s.rep, nil
}

func (s *switcher) consoleRoundTrip(ctx context.Context) time.Duration {
	var longest time.Duration
	for _, b := range s.bouncers {
		start := time.Now()
		if _, err := b.Pools(ctx); err == nil && time.Since(start) > longest {
			longest = time.Since(start)
		}
	}
	return longest
}

// checks runs what a switch and a dry run check before anything changes:
// no switch running, the operator's verify, the preflight.
func (s *switcher) checks(ctx context.Context) error {
	if err := s.refuseRunning(ctx); err != nil {
		return err
	}
	if s.opts.Verify != nil {
		if err := s.opts.Verify(ctx); err != nil {
			return &PreflightError{Check: "verify", Detail: err.Error()}
		}
	}
	if err := s.preflight(ctx); err != nil {
		return err
	}
	s.rep.Preflight = time.Since(s.rep.Started)
	return nil
}

// openRunning opens the switcher of --resume and --abort, loaded with the
// switch the journal records as running. With an error it returns the
// switcher still open (for its report) when opening worked.
func openRunning(ctx context.Context, cfg Config, opts Options, log *slog.Logger) (*switcher, error) {
	s, err := open(ctx, cfg, opts, log)
	if err != nil {
		return nil, err
	}
	s.rep.Started = time.Now()
	s.resuming = true
	return s, s.loadRunning(ctx)
}

// refuseRunning refuses when either cluster records a running switch.
func (s *switcher) refuseRunning(ctx context.Context) error {
	for _, sess := range []*session{s.from, s.to} {
		r, err := sess.runningSwitch(ctx)
		if err != nil {
			return err
		}
		if r != nil {
			return &InProgressError{SwitchID: r.ID, From: r.From, To: r.To, Since: r.StartedAt}
		}
	}
	return nil
}

// loadRunning reads the running switch of this direction, merging what
// both clusters' journals know (a step journaled on one side only counts).
func (s *switcher) loadRunning(ctx context.Context) error {
	var recs []*record
	for _, sess := range []*session{s.from, s.to} {
		r, err := sess.runningSwitch(ctx)
		if err != nil {
			return err
		}
		if r != nil {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return &NothingToResumeError{}
	}
	r := recs[0]
	for _, other := range recs[1:] {
		for k, v := range other.Started {
			if _, ok := r.Started[k]; !ok {
				r.Started[k] = v
			}
		}
		for k, v := range other.Ended {
			r.Ended[k] = v
		}
	}
	if r.From != s.cfg.From.Name || r.To != s.cfg.To.Name {
		return &PreflightError{Check: "direction", Detail: fmt.Sprintf("the running switch %s goes from %s to %s: give --from %s --to %s", r.ID, r.From, r.To, r.From, r.To)}
	}
	s.rec = r
	s.rep.SwitchID = r.ID
	// A switch may have begun on one cluster only before its process died.
	return s.both(func(sess *session) error {
		_, err := sess.conn.Exec(ctx, `INSERT INTO pgtandem.switches (switch_id, from_cluster, to_cluster, state, started_at, to_was_fenced)
			VALUES ($1, $2, $3, 'running', $4, $5) ON CONFLICT (switch_id) DO NOTHING`, r.ID, r.From, r.To, r.StartedAt, r.ToWasFenced)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", sess.name, err)
		}
		return nil
	})
}

// steps runs fence to resume. Until the resume starts, a failure or the
// deadline undoes the switch.
func (s *switcher) steps(ctx context.Context) error {
	start := time.Now()
	if s.rep.PauseStart.IsZero() {
		s.rep.PauseStart = start // a resumed switch keeps its first fence's
	}
	deadlineCtx, cancel := context.WithDeadlineCause(ctx, start.Add(s.cfg.Deadline),
		fmt.Errorf("the deadline of %s from the fence expired", s.cfg.Deadline))
	defer cancel()
	for _, step := range []struct {
		name string
		run  func(context.Context) (string, error)
	}{
		{StepFence, s.fence},
		{StepMarker, s.marker},
		{StepSequences, s.sequences},
		{StepUnfence, s.unfenceTarget},
		{StepRedirect, s.redirect},
	} {
		if err := s.runStep(deadlineCtx, step.name, step.run); err != nil {
			deadline := deadlineCtx.Err() != nil && ctx.Err() == nil
			if undoErr := s.undo(ctx); undoErr != nil {
				s.rep.Outcome = OutcomeUndoFailed
				return &UndoFailedError{SwitchID: s.rec.ID, Cause: err, UndoErr: undoErr}
			}
			if endErr := s.end(ctx, StateUndone); endErr != nil {
				s.log.Warn("switch undone, but its end could not be journaled", "switch", s.rec.ID, "err", endErr)
			}
			return &UndoneError{SwitchID: s.rec.ID, Step: step.name, Deadline: deadline, Cause: err}
		}
	}
	// The point of no return: from here clients may commit on the target.
	// The resume runs on the caller's context, not under the deadline.
	if err := s.runStep(ctx, StepResume, s.resume); err != nil {
		s.rep.Outcome = OutcomeNotResumed
		return &NotResumedError{SwitchID: s.rec.ID, To: s.cfg.To.Name, Cause: err}
	}
	s.waitCatchUp(ctx)
	return s.finishCursor(ctx)
}

const (
	// catchUpWait bounds waitCatchUp: clients still queue in PgBouncer this
	// long after the RESUME only when the load needs more server
	// connections than the pool holds, and the switch goes on then.
	catchUpWait = 2 * time.Second
	// catchUpPoll is how often waitCatchUp reads SHOW POOLS.
	catchUpPoll = 10 * time.Millisecond
)

// waitCatchUp waits, after the RESUME, until no client waits in any
// PgBouncer for a server connection (at most catchUpWait) and records in
// the report how long after the RESUME that was: when the transactions the
// pause queued, and those that queued behind them, had all been served.
//
// The write pause ends at the RESUME, but not the clients' wait: PgBouncer
// closed its server connections at the PAUSE and opens those to the target
// one at a time, while the queued transactions and those behind them wait.
// In the switch benchmark (500 TPS, a pool of 8) that took 100-900 ms.
//
// The rest of the switch waits for it: the cursor step, the journal's end
// and ending the switch's two sessions are not urgent, the queued clients
// are, and on a small machine that work would take CPU from them (ending a
// backend costs 16-35 ms of CPU on the 2-core VMs pgtandem is tested on).
func (s *switcher) waitCatchUp(ctx context.Context) {
	if !s.cfg.has(FencePgBouncer) {
		return // clients did not queue in PgBouncer
	}
	waitCtx, cancel := context.WithTimeoutCause(ctx, catchUpWait, fmt.Errorf("not within %s of the RESUME", catchUpWait))
	defer cancel()
	err := s.eachBouncer(func(_ int, b *PgBouncer) error {
		return b.WaitNoClientWaiting(waitCtx, s.cfg.PgBouncer.Database, catchUpPoll)
	})
	if err != nil {
		s.rep.CatchUpError = err.Error()
		s.log.Warn("switch: clients not seen caught up after the RESUME; going on", "switch", s.rec.ID, "err", err)
		return
	}
	s.rep.CaughtUp = time.Since(s.rep.PauseEnd)
}

// finishCursor records the cut after the RESUME and ends the switch done;
// when the cut cannot be recorded the switch stays running for --resume.
func (s *switcher) finishCursor(ctx context.Context) error {
	cutCtx, cancel := context.WithTimeoutCause(ctx, s.cfg.ProbeTimeout,
		fmt.Errorf("the cut row did not reach %s within switch.probe-timeout %s (is pg2broker --from %s running?)", s.cfg.To.Topic, s.cfg.ProbeTimeout, s.cfg.To.Name))
	defer cancel()
	if err := s.runStep(cutCtx, StepCursor, s.recordCut); err != nil {
		s.rep.Outcome = OutcomeCutNotRecorded
		return &CutNotRecordedError{SwitchID: s.rec.ID, To: s.cfg.To.Name, Cause: err}
	}
	return s.end(ctx, StateDone)
}

// runStep runs a step between two records of it in the journal, its start
// and its end (with its detail).
//
// Only some starts are journaled before the step acts, each in one round
// trip: the fence's (the switch's window opens there), the resume's (the
// point of no return, which --resume and --abort decide by), and a step
// that runs an operator hook (undo runs the matching hook only for a step
// the journal shows started, since pgtandem cannot look at what a hook
// did). Every other record waits for the next of those writes: --resume
// runs every step from the fence again whatever the journal shows past
// it, and undo does each PgBouncer and database action whether or not its
// step ran. That leaves four fewer round trips in the write pause. With an
// AfterStep hook every end is journaled at once, and the hook runs then.
func (s *switcher) runStep(ctx context.Context, step string, run func(context.Context) (string, error)) error {
	start := time.Now()
	s.unjournaled = addRecord(s.unjournaled, stepRecord{step: step, start: start})
	if s.journaledFirst(step) {
		if err := s.journal(ctx); err != nil {
			return err
		}
	}
	s.rec.Started[step] = start
	detail, err := run(ctx)
	end := time.Now()
	s.rep.addStep(step, start, end, detail)
	if err != nil {
		s.rep.Steps[len(s.rep.Steps)-1].Detail = err.Error()
		return err
	}
	s.rec.Ended[step] = end
	s.unjournaled = addRecord(s.unjournaled, stepRecord{step: step, start: start, end: end, detail: detail})
	s.log.Info("switch step done", "switch", s.rec.ID, "step", step, "took", end.Sub(start), "detail", detail)
	if s.opts.AfterStep != nil {
		// Fault injection stops the process between two steps, the next
		// one not started: the end is journaled on its own.
		return s.journal(ctx)
	}
	return nil
}

// journaledFirst tells whether step's start is journaled before it acts
// (see runStep).
func (s *switcher) journaledFirst(step string) bool {
	switch step {
	case StepFence, StepResume:
		return true
	case StepUnfence:
		return s.cfg.has(FenceHook)
	case StepRedirect:
		return s.cfg.Redirect == RedirectHook
	}
	return false
}

// stepRecord is a step's start, or its start and end, to journal.
type stepRecord struct {
	step       string
	start, end time.Time // end zero while the step runs
	detail     string
}

// addRecord adds r to the records waiting for the journal; it replaces the
// last one when that is the same step's start, not journaled yet either, so
// that each step is written once per journal write.
func addRecord(records []stepRecord, r stepRecord) []stepRecord {
	if n := len(records); n > 0 && records[n-1].step == r.step {
		records[n-1] = r
		return records
	}
	return append(records, r)
}

// journal writes the step records not journaled yet on both clusters, in
// one round trip each, and runs AfterStep for each end written.
func (s *switcher) journal(ctx context.Context) error {
	if len(s.unjournaled) == 0 {
		return nil
	}
	if err := s.both(func(sess *session) error { return sess.steps(ctx, s.rec.ID, s.unjournaled) }); err != nil {
		return err
	}
	written := s.unjournaled
	s.unjournaled = nil
	if s.opts.AfterStep != nil {
		for _, r := range written {
			if !r.end.IsZero() {
				s.opts.AfterStep(r.step)
			}
		}
	}
	return nil
}

// end records the outcome on both clusters.
func (s *switcher) end(ctx context.Context, state string) error {
	s.rep.Ended = time.Now()
	switch state {
	case StateDone:
		s.rep.Outcome = OutcomeDone
	case StateUndone:
		s.rep.Outcome = OutcomeUndone
	case StateAborted:
		s.rep.Outcome = OutcomeAborted
	}
	if !s.rep.PauseStart.IsZero() && !s.rep.PauseEnd.IsZero() {
		s.rep.Pause = s.rep.PauseEnd.Sub(s.rep.PauseStart)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), UndoTimeout)
	defer cancel()
	if err := s.both(func(sess *session) error { return sess.reopen(ctx) }); err != nil {
		return err
	}
	if err := s.journal(ctx); err != nil {
		return err
	}
	return s.both(func(sess *session) error { return sess.finish(ctx, s.rec.ID, state, s.rep) })
}

// fence stops writes on the source: PAUSE on every PgBouncer (all or
// nothing), then the database made read-only for new sessions and the
// client sessions terminated, then the hook.
//
// The read-only default waits for the PAUSE to complete: while a PAUSE
// waits for running transactions, and before PgBouncer got it, PgBouncer
// may still open server connections, and those would keep the default for
// their life, failing clients' writes (after an undo too, which resumes a
// PAUSE that timed out before it lifts the fence). It goes in one round
// trip with the terminations (see session.fence), which cost a round trip
// after the PAUSE anyway.
func (s *switcher) fence(ctx context.Context) (string, error) {
	var details []string
	start := time.Now()
	if s.cfg.has(FencePgBouncer) {
		pauseCtx, cancel := context.WithTimeout(ctx, s.cfg.PauseTimeout)
		err := s.eachBouncer(func(_ int, b *PgBouncer) error {
			if !s.resuming {
				return b.Pause(pauseCtx, s.cfg.PgBouncer.Database) // the preflight saw it not paused
			}
			if d, err := b.Database(pauseCtx, s.cfg.PgBouncer.Database); err == nil && d != nil && d.Paused {
				// Paused by the run this one resumes, which may have died
				// while the PAUSE still waited for transactions.
				return b.waitDrained(pauseCtx, s.cfg.PgBouncer.Database)
			}
			return b.Pause(pauseCtx, s.cfg.PgBouncer.Database)
		})
		cancel()
		if err != nil {
			return "", err
		}
		details = append(details, fmt.Sprintf("%d PgBouncer paused in %s", len(s.bouncers), ms(time.Since(start))))
	}
	if s.cfg.has(FenceDatabase) {
		// The marker goes with the terminations when nothing else fences
		// after them: the fence hook must have run before it.
		marker := ""
		if !s.cfg.has(FenceHook) {
			marker = s.rec.ID
		}
		fencing := time.Now()
		n, lsn, err := s.from.fence(ctx, marker)
		if err != nil {
			return "", err
		}
		s.rep.Terminated = n
		detail := fmt.Sprintf("database read-only and %d sessions terminated in %s", n, ms(time.Since(fencing)))
		if marker != "" {
			s.markerLSN = lsn
			detail += ", marker written"
		}
		details = append(details, detail)
	}
	if s.cfg.has(FenceHook) {
		if err := s.hook(ctx, "fence", s.cfg.Hooks.Fence, s.cfg.From); err != nil {
			return "", err
		}
		details = append(details, "fence hook ran")
	}
	return strings.Join(details, ", "), nil
}

// marker writes the switch's marker on the source and waits until the
// apply committed it on the target: then the target holds every
// transaction the source committed before the fence. Meanwhile it reads
// the source's sequences and sets them on the target (unless the marker
// arrives first), and, when redirectsEarly, points PgBouncer at the
// target; it ends once all three are done.
func (s *switcher) marker(ctx context.Context) (string, error) {
	lsn := s.markerLSN
	if lsn == 0 { // the fence did not write it
		var err error
		if lsn, err = s.from.writeMarker(ctx, s.rec.ID); err != nil {
			return "", err
		}
	}
	// The fenced source's sequences no longer move, and the reverse flow
	// has applied on it all it will before clients move (nothing writes on
	// the target yet): read both while the marker travels, on the source's
	// session, which is free until the step's end is journaled. The last
	// message of the target's topic the source applied is where the
	// reverse flow's share of clients' writes begins.
	// The sequences are set on the target with the next look for the
	// marker: nothing writes there before the unfence, and the marker wait
	// is longer than the read, so they leave the pause.
	read := make(chan error, 1)
	seqs := make(chan []sequence, 1)
	s.seqsSet = false
	go func() {
		var err error
		s.seqs, s.rep.ReverseMessageID, err = s.from.readAtFence(ctx, s.seqNames, s.cfg.To.Name)
		if err == nil && len(s.seqs) > 0 {
			seqs <- s.seqs
		}
		read <- err
	}()
	redirect := make(chan error, 1)
	if s.redirectsEarly() {
		go func() { redirect <- s.redirectBouncers(ctx, s.cfg.To.Entry) }()
	} else {
		redirect <- nil
	}
	arrival, set, err := s.to.waitMarker(ctx, s.rec.ID, s.cfg.From.Name, seqs)
	s.seqsSet = set
	for _, done := range []chan error{read, redirect} {
		if e := <-done; err == nil && e != nil {
			err = e
		}
	}
	if err != nil {
		return "", err
	}
	s.rep.MarkerLSN, s.rep.MarkerMessageID = lsn.String(), arrival.MessageID
	s.arrival = arrival
	return fmt.Sprintf("applied at source lsn %s, message %s", arrival.CommitLSN, arrival.MessageID), nil
}

// prepareSequences lists the source's sequences, for a resumed switch that
// did not run the preflight.
func (s *switcher) prepareSequences(ctx context.Context) error {
	names, err := s.from.listSequences(ctx)
	s.seqNames = names
	return err
}

// sequences sets every sequence the marker step read on the fenced source
// on the target exactly, in one round trip, unless the marker step did
// while the marker travelled. (A resumed switch runs the marker step again
// before this one.)
func (s *switcher) sequences(ctx context.Context) (string, error) {
	seqs := s.seqs
	s.rep.Sequences = len(seqs)
	if s.seqsSet {
		return fmt.Sprintf("%d sequences (set during the marker step)", len(seqs)), nil
	}
	if err := s.to.setSequences(ctx, seqs); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d sequences", len(seqs)), nil
}

// unfenceTarget writes the switch's cut row on the target and lifts the
// target's own fence, set by an earlier switch that moved clients away from
// it.
func (s *switcher) unfenceTarget(ctx context.Context) (string, error) {
	// The cut row commits on the target before anything can write there:
	// its frame in the target's topic comes before every client's.
	cut := &cursor.Mark{SwitchID: s.rec.ID, Kind: cursor.Cut, From: s.cfg.From.Name, To: s.cfg.To.Name,
		FromTopic: s.cfg.From.Topic, ToTopic: s.cfg.To.Topic, FromMessageID: s.arrival.MessageID,
		FromCommitLSN: event.LSN(s.arrival.CommitLSN), FromCommitTime: s.arrival.CommitTime, ToAfterMessageID: s.rep.ReverseMessageID}
	// The target is fenced when the switch began so (lifting it again is
	// harmless): known from the journal, no round trip to ask.
	unfence := s.cfg.has(FenceDatabase) && s.rec.ToWasFenced
	if err := s.to.writeCut(ctx, cut, unfence); err != nil {
		return "", err
	}
	details := []string{"cut row written"}
	if unfence {
		details = append(details, "database fence of "+s.cfg.To.Name+" lifted")
	}
	if s.cfg.has(FenceHook) {
		if err := s.hook(ctx, "unfence", s.cfg.Hooks.Unfence, s.cfg.To); err != nil {
			return "", err
		}
		details = append(details, "unfence hook ran for "+s.cfg.To.Name)
	}
	return strings.Join(details, ", "), nil
}

// redirectsEarly tells whether the marker step points PgBouncer at the
// target while the marker travels, rather than the redirect step after
// it: only when every PgBouncer it points there was paused by the fence.
// Clients then reach the target at the RESUME, whenever the RELOAD was,
// and the RELOAD and its SET leave the pause. Without that PAUSE clients
// would reach the target before it holds the source's last transactions.
// A redirect hook is never run early: undo runs its reverse only for a
// redirect step the journal shows started, while undo points PgBouncer
// back in any case.
func (s *switcher) redirectsEarly() bool {
	return s.cfg.Redirect == RedirectPgBouncer && s.cfg.has(FencePgBouncer)
}

// redirect points clients at the target, unless the marker step did (it
// always runs before this one, a resumed switch's too).
func (s *switcher) redirect(ctx context.Context) (string, error) {
	entry := s.cfg.To.Entry
	switch s.cfg.Redirect {
	case RedirectPgBouncer:
		early := s.redirectsEarly()
		if !early {
			if err := s.redirectBouncers(ctx, entry); err != nil {
				return "", err
			}
		}
		s.rep.RedirectTo = fmt.Sprintf("PgBouncer database %s -> %s", s.cfg.PgBouncer.Database, entry)
		if early {
			return s.rep.RedirectTo + " (during the marker step)", nil
		}
	case RedirectHook:
		if err := s.hook(ctx, "redirect", s.cfg.Hooks.Redirect, s.cfg.To); err != nil {
			return "", err
		}
		s.rep.RedirectTo = "redirect hook ran for " + entry.String()
	case RedirectNone:
		s.rep.RedirectTo = "point clients at " + entry.String() + " now (redirect: none)"
	}
	return s.rep.RedirectTo, nil
}

// redirectBouncers points every PgBouncer at entry and sets its
// server_login_retry to 0 until the RESUME: a client logging in between
// RELOAD and RESUME would otherwise stall every client of the database for
// server_login_retry (see PgBouncer.Redirect). The value the RELOAD
// restored from the file is kept for the RESUME to set back.
func (s *switcher) redirectBouncers(ctx context.Context, entry DatabaseEntry) error {
	if len(s.loginRetry) != len(s.bouncers) {
		s.loginRetry = make([]string, len(s.bouncers))
	}
	return s.eachBouncer(func(i int, b *PgBouncer) error {
		if err := b.Redirect(ctx, s.cfg.PgBouncer.DatabasesFile, s.cfg.PgBouncer.Database, entry); err != nil {
			return err
		}
		if s.loginRetry[i] == "" { // the preflight read it, unless resuming
			retry, err := b.Setting(ctx, "server_login_retry")
			if err != nil {
				return err
			}
			s.loginRetry[i] = retry
		}
		return b.Set(ctx, "server_login_retry", "0")
	})
}

// resume lets the queued clients go, to the target.
func (s *switcher) resume(ctx context.Context) (string, error) {
	if s.cfg.has(FencePgBouncer) {
		err := s.eachBouncer(func(_ int, b *PgBouncer) error { return b.Resume(ctx, s.cfg.PgBouncer.Database) })
		if err != nil {
			return "", err
		}
	}
	s.rep.PauseEnd = time.Now()
	// After the pause: clients run again.
	_ = s.eachBouncer(func(i int, b *PgBouncer) error {
		if i < len(s.loginRetry) && s.loginRetry[i] != "" {
			if err := b.Set(ctx, "server_login_retry", s.loginRetry[i]); err != nil {
				s.log.Warn("server_login_retry not restored; a RELOAD restores it", "pgbouncer", b.String(), "err", err)
			}
		}
		return nil
	})
	return "", nil
}

// undo brings clients back to the source, in the order that never lets
// both clusters take writes: the target fenced again and PgBouncer pointed
// back first, then the source unfenced, then RESUME. Every action is done
// whether or not the step that would have needed it ran, since a switch
// whose process died may have done part of a step.
func (s *switcher) undo(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*UndoTimeout)
	defer cancel()
	start := time.Now()
	if err := s.both(func(sess *session) error { return sess.reopen(ctx) }); err != nil {
		return err
	}
	var errs []error
	if s.cfg.Redirect == RedirectPgBouncer {
		errs = append(errs, s.redirectBouncers(ctx, s.cfg.From.Entry))
	}
	if _, redirected := s.rec.Started[StepRedirect]; redirected && s.cfg.Redirect == RedirectHook {
		errs = append(errs, s.hook(ctx, "redirect", s.cfg.Hooks.Redirect, s.cfg.From))
	}
	if s.cfg.has(FenceDatabase) && s.rec.ToWasFenced {
		if fenced, err := s.to.fenced(ctx); err != nil || !fenced {
			if _, _, err := s.to.fence(ctx, ""); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, unfenced := s.rec.Started[StepUnfence]; unfenced && s.cfg.has(FenceHook) {
		errs = append(errs, s.hook(ctx, "fence", s.cfg.Hooks.Fence, s.cfg.To))
	}
	if err := errors.Join(errs...); err != nil {
		// The target may take writes: leave the source fenced and clients
		// paused rather than risk both.
		return err
	}
	if s.cfg.has(FenceDatabase) {
		errs = append(errs, s.from.unfence(ctx))
	}
	if s.cfg.has(FenceHook) {
		errs = append(errs, s.hook(ctx, "unfence", s.cfg.Hooks.Unfence, s.cfg.From))
	}
	if s.cfg.has(FencePgBouncer) {
		_, err := s.resume(ctx)
		errs = append(errs, err)
	}
	end := time.Now()
	s.rep.PauseEnd = end
	s.rep.addStep(StepUndo, start, end, "clients back on "+s.cfg.From.Name)
	return errors.Join(errs...)
}

// hook runs an operator command with the switch's environment.
func (s *switcher) hook(ctx context.Context, action, command string, on Cluster) error {
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A hook that starts children (ssh, kubectl) must not outlive the
	// deadline: the whole process group is killed, and its output is not
	// waited for more than a second after that.
	cmd.WaitDelay = time.Second
	id := ""
	if s.rec != nil {
		id = s.rec.ID
	}
	cmd.Env = append(os.Environ(),
		"PGTANDEM_SWITCH_ID="+id,
		"PGTANDEM_SWITCH_FROM="+s.cfg.From.Name,
		"PGTANDEM_SWITCH_TO="+s.cfg.To.Name,
		"PGTANDEM_SWITCH_ACTION="+action,
		"PGTANDEM_SWITCH_CLUSTER="+on.Name,
		"PGTANDEM_SWITCH_HOST="+on.Entry.Host,
		"PGTANDEM_SWITCH_PORT="+strconv.Itoa(on.Entry.Port),
		"PGTANDEM_SWITCH_DBNAME="+on.Entry.DBName,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return &HookError{Action: action, Command: command, Output: strings.TrimSpace(string(out)), Err: err}
	}
	return nil
}

// newID names a switch: its start time and a random suffix, e.g.
// 20261130T201500Z-3f9a1c.
func newID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// recordCut finds the cut row's frame in the target's topic and writes the
// hop row on the source, which sends the source topic's consumers there;
// with PrepareSubscriptions it first gives each of them a subscription at
// the cut, so that none can hop before it exists.
func (s *switcher) recordCut(ctx context.Context) (string, error) {
	cut, err := cursor.ReadMark(ctx, s.to.conn, s.rec.ID, cursor.Cut)
	if err != nil {
		return "", fmt.Errorf("cluster %s: %w", s.to.name, err)
	}
	if cut == nil {
		return "", fmt.Errorf("cluster %s has no cut row of switch %s in pgtandem.cursor", s.to.name, s.rec.ID)
	}
	hop, err := cursor.FindCut(ctx, s.opts.Pulsar, cut)
	if err != nil {
		return "", err
	}
	detail := fmt.Sprintf("cut at message %s of %s (lsn %s), after message %s of %s", hop.ToMessageID, hop.ToTopic, hop.ToCommitLSN, hop.FromMessageID, hop.FromTopic)
	if s.cfg.PrepareSubscriptions {
		// A failure here must not hold the hop row back: consumers need it
		// whether or not their twin exists, and pgtandem cursor prepare
		// can be run again.
		prepared, err := cursor.Prepare(ctx, s.opts.Admin, s.opts.Pulsar, hop, s.cfg.CursorSubscriptions)
		s.rep.Prepared = prepared
		if err != nil {
			s.rep.PrepareError = err.Error()
			s.log.Warn("switch: subscriptions not prepared; run pgtandem cursor prepare", "switch", s.rec.ID, "err", err)
			detail += fmt.Sprintf(", subscriptions not prepared (%v): run pgtandem cursor prepare --switch %s", err, s.rec.ID)
		} else {
			detail += fmt.Sprintf(", %d subscriptions prepared", len(prepared))
		}
	}
	if err := hop.Write(ctx, s.from.conn); err != nil {
		return "", fmt.Errorf("cluster %s: %w", s.from.name, err)
	}
	s.rep.Cut = hop
	return detail, nil
}
