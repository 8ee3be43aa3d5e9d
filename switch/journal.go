package switchover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Steps of a switch, in order. Each is recorded with its start and end in
// pgtandem.switch_steps on both clusters. Every step can run again: a
// resumed switch repeats the ones that did not end.
const (
	StepFence     = "fence"     // the write pause starts
	StepMarker    = "marker"    // a marker written on the source is applied on the target
	StepSequences = "sequences" // every sequence of the source set on the target
	StepUnfence   = "unfence"   // the target's own fence lifted (after an earlier switch)
	StepRedirect  = "redirect"  // PgBouncer pointed at the target, or the hook ran
	StepResume    = "resume"    // RESUME: the point of no return, the pause ends
	StepCursor    = "cursor"    // the cut found in the target's topic, the hop row written on the source
	StepUndo      = "undo"      // only when a switch is undone or aborted
)

// Steps is every step of a switch that completes, in order.
var Steps = []string{StepFence, StepMarker, StepSequences, StepUnfence, StepRedirect, StepResume, StepCursor}

// Switch states in pgtandem.switches.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateUndone  = "undone"
	StateAborted = "aborted"
)

// record is a switch's row in pgtandem.switches with its steps.
type record struct {
	ID          string
	From, To    string
	State       string
	StartedAt   time.Time
	ToWasFenced bool
	// Started and Ended hold each step's times; a step that started and
	// did not end is in Started only.
	Started, Ended map[string]time.Time
}

func (r *record) resumed() bool {
	_, ok := r.Started[StepResume]
	return ok
}

// runningSwitch returns the switch recorded as running on the cluster, nil
// when none is.
func (s *session) runningSwitch(ctx context.Context) (*record, error) {
	r := &record{Started: map[string]time.Time{}, Ended: map[string]time.Time{}}
	err := s.conn.QueryRow(ctx, `SELECT switch_id, from_cluster, to_cluster, state, started_at, to_was_fenced FROM pgtandem.switches
		WHERE state = 'running' ORDER BY started_at DESC LIMIT 1`).Scan(&r.ID, &r.From, &r.To, &r.State, &r.StartedAt, &r.ToWasFenced)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read pgtandem.switches: %w", s.name, err)
	}
	rows, err := s.conn.Query(ctx, `SELECT step, started_at, ended_at FROM pgtandem.switch_steps WHERE switch_id = $1`, r.ID)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read pgtandem.switch_steps: %w", s.name, err)
	}
	var step string
	var started time.Time
	var ended *time.Time
	_, err = pgx.ForEachRow(rows, []any{&step, &started, &ended}, func() error {
		r.Started[step] = started
		if ended != nil {
			r.Ended[step] = *ended
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read pgtandem.switch_steps: %w", s.name, err)
	}
	return r, nil
}

// begin records a new running switch.
func (s *session) begin(ctx context.Context, r *record) error {
	_, err := s.conn.Exec(ctx, `INSERT INTO pgtandem.switches (switch_id, from_cluster, to_cluster, state, started_at, to_was_fenced)
		VALUES ($1, $2, $3, 'running', $4, $5)`, r.ID, r.From, r.To, r.StartedAt, r.ToWasFenced)
	if err != nil {
		return fmt.Errorf("cluster %s: record the switch in pgtandem.switches: %w", s.name, err)
	}
	return nil
}

// stepSQL records step $2 of switch $1 as started at $3 and, when $4 is
// not null, ended then with detail $5. synchronous_commit is off for it:
// the journal outlives the switch process, which is what it is for, and a
// flush per write would lengthen the write pause; a crash of PostgreSQL
// itself in the window may lose the last step records, and every step can
// run again.
const stepSQL = `WITH recorded AS (
	INSERT INTO pgtandem.switch_steps (switch_id, step, started_at, ended_at, detail) VALUES ($1, $2, $3, $4, nullif($5, ''))
	ON CONFLICT (switch_id, step) DO UPDATE SET started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, detail = EXCLUDED.detail
) SELECT set_config('synchronous_commit', 'off', true)`

// steps journals records of switch id in one round trip, one transaction.
func (s *session) steps(ctx context.Context, id string, records []stepRecord) error {
	// One transaction: set_config(..., true) lasts until its commit,
	// which it makes asynchronous.
	b := &pgx.Batch{}
	for _, r := range records {
		var end *time.Time
		if !r.end.IsZero() {
			end = &r.end
		}
		b.Queue(stepSQL, id, r.step, r.start, end, r.detail)
	}
	if err := s.conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("cluster %s: journal steps of switch %s: %w", s.name, id, err)
	}
	return nil
}

// finish records the switch's end state and report.
func (s *session) finish(ctx context.Context, id, state string, rep *Report) error {
	_, err := s.conn.Exec(ctx, `UPDATE pgtandem.switches SET state = $2, ended_at = now(), marker_lsn = nullif($3, '')::pg_lsn,
		marker_message_id = nullif($4, ''), reverse_message_id = nullif($5, ''), report = $6 WHERE switch_id = $1`,
		id, state, rep.MarkerLSN, rep.MarkerMessageID, rep.ReverseMessageID, rep)
	if err != nil {
		return fmt.Errorf("cluster %s: record the end of switch %s: %w", s.name, id, err)
	}
	return nil
}
