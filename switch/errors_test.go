package switchover_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	switchover "github.com/pgtandem/pgtandem/switch"
)

func TestUndoneErrorSaysWhy(t *testing.T) {
	cause := errors.New("marker sw-1 not applied")
	late := &switchover.UndoneError{SwitchID: "sw-1", Step: "marker", Deadline: true, Cause: cause}
	if want := "switch sw-1 ran past the deadline at step marker and was undone, clients continue on the source: marker sw-1 not applied"; late.Error() != want {
		t.Errorf("deadline:\n got %q\nwant %q", late.Error(), want)
	}
	failed := &switchover.UndoneError{SwitchID: "sw-1", Step: "sequences", Cause: cause}
	if msg := failed.Error(); !strings.Contains(msg, "sw-1 failed at step sequences and was undone") || strings.Contains(msg, "deadline") {
		t.Errorf("failure: %q", msg)
	}
	if !errors.Is(fmt.Errorf("run: %w", late), cause) {
		t.Error("UndoneError does not unwrap to its cause")
	}
}

func TestInProgressErrorLiveOrRecorded(t *testing.T) {
	live := (&switchover.InProgressError{Live: true, SwitchID: "sw-1"}).Error()
	if !strings.Contains(live, "another pgtandem switch is running now") || !strings.Contains(live, "nothing was changed") ||
		strings.Contains(live, "--resume") {
		t.Errorf("live: %q", live)
	}
	since := time.Date(2026, 3, 1, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	recorded := (&switchover.InProgressError{SwitchID: "sw-1", From: "old", To: "new", Since: since}).Error()
	for _, want := range []string{"switch sw-1 from old to new, started 2026-03-01T02:04:05Z, is recorded as running",
		"pgtandem switch --resume", "--abort", "nothing was changed"} {
		if !strings.Contains(recorded, want) {
			t.Errorf("recorded: %q lacks %q", recorded, want)
		}
	}
}

func TestRefusalsSayNothingChanged(t *testing.T) {
	msg := (&switchover.PreflightError{Check: "lag", Detail: "marker took 3s, switch.max-lag is 1s"}).Error()
	if want := "switch refused (lag): marker took 3s, switch.max-lag is 1s; nothing was changed"; msg != want {
		t.Errorf("got %q, want %q", msg, want)
	}
}

func TestStuckErrorsSayWhatToRun(t *testing.T) {
	cause := errors.New("RESUME on PgBouncer 10.0.0.9:6432: connection refused")
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{&switchover.UndoFailedError{SwitchID: "sw-1", Cause: errors.New("deadline"), UndoErr: cause}, []string{"sw-1", "deadline", "connection refused", "pgtandem switch --abort"}},
		{&switchover.NotResumedError{SwitchID: "sw-1", To: "new", Cause: cause}, []string{"sw-1", "redirected to new", "pgtandem switch --resume", "connection refused"}},
		{&switchover.PastPointOfNoReturnError{SwitchID: "sw-1"}, []string{"sw-1", "--resume", "other direction"}},
	} {
		for _, want := range tc.want {
			if !strings.Contains(tc.err.Error(), want) {
				t.Errorf("%T: %q lacks %q", tc.err, tc.err.Error(), want)
			}
		}
	}
}
