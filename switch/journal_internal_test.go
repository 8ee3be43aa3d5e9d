package switchover

import (
	"testing"
	"time"
)

// TestRecordResumed: the point of no return is the start of the resume,
// not its end: once RESUME may have reached a PgBouncer, clients may commit
// on the target and only --resume is safe.
func TestRecordResumed(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name    string
		started []string
		want    bool
	}{
		{"nothing started", nil, false},
		{"redirected, not resumed", []string{StepFence, StepMarker, StepSequences, StepUnfence, StepRedirect}, false},
		{"resume started", []string{StepFence, StepMarker, StepSequences, StepUnfence, StepRedirect, StepResume}, true},
	} {
		r := &record{Started: map[string]time.Time{}, Ended: map[string]time.Time{}}
		for _, s := range tc.started {
			r.Started[s], r.Ended[s] = now, now
		}
		delete(r.Ended, StepResume)
		if got := r.resumed(); got != tc.want {
			t.Errorf("%s: resumed() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
