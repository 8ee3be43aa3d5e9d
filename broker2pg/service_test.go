package broker2pg

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// TestBacklogFailureLoggedOnce: a backlog the admin API does not give is
// logged when it starts failing, not on every poll, and leaves the gauge
// unknown instead of 0; once readable again the gauge follows.
func TestBacklogFailureLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	s := &Service{cfg: Config{Target: "dst"}, log: slog.New(slog.NewTextHandler(&logs, nil))}
	s.backlog.Store(backlogUnknown)
	var backlog int64
	var readErr error
	var asked []string
	read := func(_ context.Context, topic, subscription string) (int64, error) {
		asked = append(asked, topic+" "+subscription)
		return backlog, readErr
	}
	failing := false
	poll := func(times int) {
		for range times {
			s.readBacklog(context.Background(), read, &failing)
		}
	}
	warnings := func() int { return strings.Count(logs.String(), "cannot read the subscription's backlog") }

	poll(1)
	if len(asked) != 0 {
		t.Fatalf("backlog read before a session resolved the topic: %v", asked)
	}
	topic := "persistent://public/default/backlog"
	s.topic.Store(&topic)
	readErr = fmt.Errorf("topic stats of %s: %w (HTTP 401)", topic, ErrAdminUnauthorized)
	poll(3)
	if warnings() != 1 || s.backlog.Load() != backlogUnknown {
		t.Fatalf("3 failed polls: %d warnings, backlog %d; want 1 warning and the backlog unknown\n%s", warnings(), s.backlog.Load(), logs.String())
	}
	if asked[0] != topic+" "+catalog.SubscriptionName("dst") {
		t.Errorf("asked for %q, want the topic and the target's subscription", asked[0])
	}
	readErr, backlog = nil, 42
	poll(2)
	if s.backlog.Load() != 42 || strings.Count(logs.String(), "backlog readable again") != 1 {
		t.Fatalf("after recovery: backlog %d\n%s", s.backlog.Load(), logs.String())
	}
	readErr = fmt.Errorf("connection refused")
	poll(2)
	if warnings() != 2 || s.backlog.Load() != backlogUnknown {
		t.Fatalf("a new failure after recovery: %d warnings in all, backlog %d; want 2 and unknown", warnings(), s.backlog.Load())
	}
}
