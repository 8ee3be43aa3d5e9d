package main

import (
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/broker2pg"
)

// TestApplyLag: status's lag is the age of the oldest change the target has
// not applied: 0 for an empty backlog (idle and caught up, however long the
// last transaction took), the age of the transaction held back while
// blocked (growing, never the stale lag of the last applied one), an upper
// bound while a backlog is left, unknown when the backlog cannot be read.
func TestApplyLag(t *testing.T) {
	now := time.Date(2026, 11, 22, 1, 30, 0, 0, time.UTC)
	last := now.Add(-10 * time.Second)
	zero, three := int64(0), int64(3)
	blocked := broker2pg.BlockedAt{Reason: "apply blocked on ...", CommitTime: now.Add(-90 * time.Second)}
	for _, c := range []struct {
		name       string
		lastCommit time.Time
		blocked    broker2pg.BlockedAt
		backlog    *int64
		want       *float64
	}{
		{"idle and caught up", last, broker2pg.BlockedAt{}, &zero, ptr(0)},
		{"backlog left", last, broker2pg.BlockedAt{}, &three, ptr(10)},
		{"backlog unknown", last, broker2pg.BlockedAt{}, nil, nil},
		{"blocked", last, blocked, &three, ptr(90)},
		{"blocked, backlog unknown", last, blocked, nil, ptr(90)},
		{"blocked by an older pgtandem", last, broker2pg.BlockedAt{Reason: "apply blocked"}, &three, ptr(10)},
		{"nothing applied yet", time.Time{}, broker2pg.BlockedAt{}, &three, nil},
		{"clock behind the source", now.Add(time.Second), broker2pg.BlockedAt{}, &three, ptr(0)},
	} {
		got := applyLag(c.lastCommit, c.blocked, c.backlog, now)
		if (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
			t.Errorf("%s: lag %v, want %v", c.name, show(got), show(c.want))
		}
	}
}

func ptr(f float64) *float64 { return &f }

func show(f *float64) any {
	if f == nil {
		return "unknown"
	}
	return *f
}
