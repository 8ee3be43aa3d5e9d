package switchover

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pgtandem/pgtandem/cursor"
)

// Outcomes of a switch, as Report.Outcome.
const (
	OutcomeDone    = "done"
	OutcomeUndone  = "undone"
	OutcomeAborted = "aborted"
	OutcomeDryRun  = "dry-run"
	OutcomeRefused = "refused"
	// OutcomeUndoFailed and OutcomeNotResumed need an operator: see the
	// error (pgtandem switch --abort or --resume).
	OutcomeUndoFailed = "undo-failed"
	OutcomeNotResumed = "not-resumed"
	// OutcomeCutNotRecorded: clients are on the target, but the cut is not
	// recorded for consumers yet (pgtandem switch --resume).
	OutcomeCutNotRecorded = "cut-not-recorded"
)

// StepTiming is one step's wall-clock times.
type StepTiming struct {
	Step   string    `json:"step"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Detail string    `json:"detail,omitempty"`
}

// Duration is End - Start.
func (s StepTiming) Duration() time.Duration { return s.End.Sub(s.Start) }

// Report is what a switch did and how long clients waited.
type Report struct {
	SwitchID string    `json:"switch_id"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Outcome  string    `json:"outcome"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended"`
	// Preflight is the time the checks took, before anything changed.
	Preflight time.Duration `json:"preflight_ns"`
	Steps     []StepTiming  `json:"steps"`
	// PauseStart and PauseEnd bound the write pause: from the start of the
	// fence to the end of the RESUME (or of the undo).
	PauseStart time.Time     `json:"pause_start"`
	PauseEnd   time.Time     `json:"pause_end"`
	Pause      time.Duration `json:"pause_ns"`
	// CaughtUp is how long after the RESUME no client waited in any
	// PgBouncer for a server connection any more: the clients the pause
	// queued had all been served. Zero without the pgbouncer fence, or when
	// that took longer than 2 s (CatchUpError says what was still waiting).
	CaughtUp     time.Duration `json:"caught_up_ns,omitempty"`
	CatchUpError string        `json:"catch_up_error,omitempty"`
	// MarkerLSN is the source's WAL position just after the switch's
	// marker; MarkerMessageID the message id, in the source's topic, of the
	// transaction that carried it; ReverseMessageID the last message of the
	// target's topic that the source had applied when the source was
	// fenced, the cut from which the reverse flow carries the target's
	// writes.
	MarkerLSN        string `json:"marker_lsn,omitempty"`
	MarkerMessageID  string `json:"marker_message_id,omitempty"`
	ReverseMessageID string `json:"reverse_message_id,omitempty"`
	// Cut is the switch's hop row (package cursor): the marker's frame in
	// the source's topic and the cut frame in the target's.
	Cut *cursor.Mark `json:"cut,omitempty"`
	// Prepared lists the subscriptions switch.cursor-prepare handled;
	// PrepareError says why it did not complete.
	Prepared     []cursor.Prepared `json:"prepared,omitempty"`
	PrepareError string            `json:"prepare_error,omitempty"`
	Sequences    int               `json:"sequences"`
	// Terminated counts sessions the database fence terminated.
	Terminated int `json:"terminated"`
	// Probes are the preflight's and dry run's measurements: the marker
	// round trips and the sequence read; ExpectedPause estimates the pause.
	ForwardProbe  time.Duration `json:"forward_probe_ns,omitempty"`
	ReverseProbe  time.Duration `json:"reverse_probe_ns,omitempty"`
	SequenceRead  time.Duration `json:"sequence_read_ns,omitempty"`
	ExpectedPause time.Duration `json:"expected_pause_ns,omitempty"`
	// RedirectTo is where clients go now (for redirect none: what to do).
	RedirectTo string `json:"redirect_to,omitempty"`
	Error      string `json:"error,omitempty"`
}

func (r *Report) addStep(step string, start, end time.Time, detail string) {
	r.Steps = append(r.Steps, StepTiming{Step: step, Start: start, End: end, Detail: detail})
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// WriteText prints the report for a terminal: the outcome, the write
// pause, and one line per step with its offset from the fence.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "switch %s from %s to %s: %s\n", r.SwitchID, r.From, r.To, r.Outcome)
	if r.Outcome == OutcomeDryRun {
		fmt.Fprintf(&b, "  preflight        %s\n", ms(r.Preflight))
		fmt.Fprintf(&b, "  forward marker   %s (%s -> %s)\n", ms(r.ForwardProbe), r.From, r.To)
		fmt.Fprintf(&b, "  reverse marker   %s (%s -> %s)\n", ms(r.ReverseProbe), r.To, r.From)
		fmt.Fprintf(&b, "  sequence read    %s (%d sequences)\n", ms(r.SequenceRead), r.Sequences)
		fmt.Fprintf(&b, "  expected pause   %s\n", ms(r.ExpectedPause))
	} else {
		if r.Preflight > 0 {
			fmt.Fprintf(&b, "  preflight        %s\n", ms(r.Preflight))
		}
		for _, s := range r.Steps {
			line := fmt.Sprintf("  %-16s +%-10s %s", s.Step, ms(s.Start.Sub(r.PauseStart)), ms(s.Duration()))
			if s.Detail != "" {
				line += "  " + s.Detail
			}
			b.WriteString(line + "\n")
		}
		switch {
		case r.PauseStart.IsZero():
		case r.Outcome == OutcomeNotResumed || r.Outcome == OutcomeUndoFailed:
			fmt.Fprintf(&b, "  write pause      not ended: clients may still wait (since %s)\n", r.PauseStart.UTC().Format(time.RFC3339Nano))
		case r.Outcome == OutcomeDone:
			fmt.Fprintf(&b, "  write pause      %s (fence start to RESUME)\n", ms(r.Pause))
			if r.CaughtUp > 0 {
				fmt.Fprintf(&b, "  caught up        %s after the RESUME (no client waiting in PgBouncer)\n", ms(r.CaughtUp))
			}
			if r.CatchUpError != "" {
				fmt.Fprintf(&b, "  caught up        %s\n", r.CatchUpError)
			}
		default:
			fmt.Fprintf(&b, "  write pause      %s (fence start to the end of the undo)\n", ms(r.Pause))
		}
		if r.MarkerLSN != "" {
			fmt.Fprintf(&b, "  marker           lsn %s, message %s; reverse cut at message %s\n", r.MarkerLSN, r.MarkerMessageID, r.ReverseMessageID)
		}
		if r.Cut != nil {
			fmt.Fprintf(&b, "  consumers        hop from %s after message %s to %s after message %s (lsn %s)\n",
				r.Cut.FromTopic, r.Cut.FromMessageID, r.Cut.ToTopic, r.Cut.ToMessageID, r.Cut.ToCommitLSN)
		}
		// Prepared is set before the hop row is written: Cut may be nil.
		for _, p := range r.Prepared {
			what := "created at the cut"
			if !p.Created {
				what = "was there already"
			}
			fmt.Fprintf(&b, "  subscription     %s on %s's topic: %s\n", p.Subscription, r.To, what)
		}
		if r.PrepareError != "" {
			fmt.Fprintf(&b, "  subscriptions    not prepared: %s; run pgtandem cursor prepare --switch %s\n", r.PrepareError, r.SwitchID)
		}
	}
	if r.RedirectTo != "" {
		fmt.Fprintf(&b, "  clients          %s\n", r.RedirectTo)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  error            %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
