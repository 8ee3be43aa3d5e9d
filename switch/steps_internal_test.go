package switchover

import (
	"slices"
	"testing"
	"time"
)

// TestJournaledFirst: a step's start reaches the journal before the step
// acts only where --resume, --abort or undo read it: the fence, the resume
// (the point of no return), and a step that runs a hook, whose reverse
// undo runs only for a step the journal shows started.
func TestJournaledFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fence    []string
		redirect string
		want     []string
	}{
		{"pgbouncer and database fences, pgbouncer redirect", []string{FencePgBouncer, FenceDatabase}, RedirectPgBouncer, []string{StepFence, StepResume}},
		{"hook fence", []string{FencePgBouncer, FenceHook}, RedirectPgBouncer, []string{StepFence, StepUnfence, StepResume}},
		{"hook redirect", []string{FenceDatabase}, RedirectHook, []string{StepFence, StepRedirect, StepResume}},
		{"hooks for both", []string{FenceHook}, RedirectHook, []string{StepFence, StepUnfence, StepRedirect, StepResume}},
		{"no redirect", []string{FencePgBouncer}, RedirectNone, []string{StepFence, StepResume}},
	} {
		s := &switcher{cfg: Config{Fence: tc.fence, Redirect: tc.redirect}}
		var got []string
		for _, step := range Steps {
			if s.journaledFirst(step) {
				got = append(got, step)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: journaled before acting: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRedirectsEarly: the marker step redirects PgBouncer only when the
// fence paused it, and never runs a redirect hook.
func TestRedirectsEarly(t *testing.T) {
	for _, tc := range []struct {
		fence    []string
		redirect string
		want     bool
	}{
		{[]string{FencePgBouncer, FenceDatabase}, RedirectPgBouncer, true},
		{[]string{FencePgBouncer}, RedirectPgBouncer, true},
		{[]string{FenceDatabase}, RedirectPgBouncer, false}, // clients not paused: they would reach the target early
		{[]string{FenceHook}, RedirectPgBouncer, false},
		{[]string{FencePgBouncer}, RedirectHook, false},
		{[]string{FencePgBouncer}, RedirectNone, false},
	} {
		s := &switcher{cfg: Config{Fence: tc.fence, Redirect: tc.redirect}}
		if got := s.redirectsEarly(); got != tc.want {
			t.Errorf("fence %v, redirect %s: redirectsEarly() = %v, want %v", tc.fence, tc.redirect, got, tc.want)
		}
	}
}

// TestAddRecord: a step's end replaces its start when that start waits for
// the journal too; a start already written (the journal took the list)
// leaves the end to be written alone; records keep their order.
func TestAddRecord(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// The fence's start was journaled before it acted: the list begins
	// with its end.
	recs := addRecord(nil, stepRecord{step: StepFence, start: at(0), end: at(50), detail: "paused"})
	recs = addRecord(recs, stepRecord{step: StepMarker, start: at(50)})
	recs = addRecord(recs, stepRecord{step: StepMarker, start: at(50), end: at(70), detail: "applied"})
	recs = addRecord(recs, stepRecord{step: StepSequences, start: at(70)})
	want := []stepRecord{
		{step: StepFence, start: at(0), end: at(50), detail: "paused"},
		{step: StepMarker, start: at(50), end: at(70), detail: "applied"},
		{step: StepSequences, start: at(70)},
	}
	if !slices.Equal(recs, want) {
		t.Fatalf("records\n%+v\nwant\n%+v", recs, want)
	}
}
