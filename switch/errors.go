package switchover

import (
	"fmt"
	"time"
)

// PreflightError is a refusal before anything changed for clients: Check
// names what was checked (pgbouncer, lag, reverse-flow, sequences,
// transactions, writers, apply, fence, verify), Detail what was found.
type PreflightError struct {
	Check  string
	Detail string
}

func (e *PreflightError) Error() string {
	return "switch refused (" + e.Check + "): " + e.Detail + "; nothing was changed"
}

// InProgressError refuses a switch while another one runs, or while one
// whose process died is still recorded as running in the journal.
type InProgressError struct {
	SwitchID string
	From, To string
	Since    time.Time
	// Live is true when another pgtandem switch process holds the lock now.
	Live bool
}

func (e *InProgressError) Error() string {
	if e.Live {
		return "switch refused: another pgtandem switch is running now (it holds the switch lock on the clusters); nothing was changed"
	}
	return fmt.Sprintf("switch refused: switch %s from %s to %s, started %s, is recorded as running; finish it with pgtandem switch --resume or undo it with --abort; nothing was changed",
		e.SwitchID, e.From, e.To, e.Since.UTC().Format(time.RFC3339))
}

// NothingToResumeError is what --resume and --abort return when the journal
// holds no running switch.
type NothingToResumeError struct{}

func (e *NothingToResumeError) Error() string {
	return "no switch is recorded as running on either cluster: nothing to resume or abort"
}

// PastPointOfNoReturnError refuses --abort of a switch that already resumed
// clients on the target: they may have committed there, so only a switch in
// the other direction (a rollback) can bring them back.
type PastPointOfNoReturnError struct {
	SwitchID string
}

func (e *PastPointOfNoReturnError) Error() string {
	return "switch " + e.SwitchID + " already resumed clients on the target (the point of no return): finish it with --resume, then roll back with a switch in the other direction"
}

// UndoneError reports a switch that failed or ran past its deadline before
// the point of no return and was undone: clients are back on the source,
// nothing was lost. Step is the step that did not complete.
type UndoneError struct {
	SwitchID string
	Step     string
	Deadline bool
	Cause    error
}

func (e *UndoneError) Error() string {
	why := "failed"
	if e.Deadline {
		why = "ran past the deadline"
	}
	return fmt.Sprintf("switch %s %s at step %s and was undone, clients continue on the source: %v", e.SwitchID, why, e.Step, e.Cause)
}

func (e *UndoneError) Unwrap() error { return e.Cause }

// UndoFailedError reports an undo that did not complete: clients may still
// be paused or the source fenced. pgtandem switch --abort tries again.
type UndoFailedError struct {
	SwitchID string
	Cause    error
	UndoErr  error
}

func (e *UndoFailedError) Error() string {
	return fmt.Sprintf("switch %s failed (%v) and undoing it failed too (%v): clients may still wait; run pgtandem switch --abort", e.SwitchID, e.Cause, e.UndoErr)
}

func (e *UndoFailedError) Unwrap() error { return e.Cause }

// HookError is an operator command that failed.
type HookError struct {
	Action  string
	Command string
	Output  string
	Err     error
}

func (e *HookError) Error() string {
	return fmt.Sprintf("%s hook %q: %v: %s", e.Action, e.Command, e.Err, e.Output)
}

func (e *HookError) Unwrap() error { return e.Err }

// NotResumedError reports a switch past the point of no return whose
// RESUME did not complete on every PgBouncer: clients are redirected to the
// target, some may still wait. pgtandem switch --resume finishes it.
type NotResumedError struct {
	SwitchID string
	To       string
	Cause    error
}

func (e *NotResumedError) Error() string {
	return fmt.Sprintf("switch %s: clients are redirected to %s but not all resumed; run pgtandem switch --resume: %v", e.SwitchID, e.To, e.Cause)
}

func (e *NotResumedError) Unwrap() error { return e.Cause }

// CutNotRecordedError reports a switch that resumed clients on the target
// but could not record its cut for downstream consumers (package cursor):
// they stay at the end of the source's topic until pgtandem switch
// --resume records it. The switch stays running, which refuses another.
type CutNotRecordedError struct {
	SwitchID string
	To       string
	Cause    error
}

func (e *CutNotRecordedError) Error() string {
	return fmt.Sprintf("switch %s: clients write on %s, but the cut for consumers is not recorded; run pgtandem switch --resume: %v", e.SwitchID, e.To, e.Cause)
}

func (e *CutNotRecordedError) Unwrap() error { return e.Cause }
