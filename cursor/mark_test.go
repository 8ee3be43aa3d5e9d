package cursor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/event"
)

func str(s string) *string { return &s }

func hopEvent() *event.Event {
	return &event.Event{Kind: event.KindInsert, Schema: "pgtandem", Table: "cursor", New: map[string]*string{
		"switch_id": str("20261201T030000Z-abcdef"), "kind": str("hop"), "from_cluster": str("old"), "to_cluster": str("new"),
		"from_topic": str("app-pg15"), "from_message_id": str("3:41:-1"), "from_commit_lsn": str("0/1A2B3C4"),
		"from_commit_time": str("2026-12-01 03:00:00.123456+00"), "to_topic": str("app-pg17"), "to_after_message_id": str(""),
		"to_message_id": str("5:2:-1"), "to_commit_lsn": str("0/5000060"), "to_commit_time": str("2026-12-01 03:00:00.2+00"),
		"written_at": str("2026-12-01 03:00:00.3+00"),
	}}
}

func TestMarkOf(t *testing.T) {
	m, ok, err := MarkOf(hopEvent())
	if !ok || err != nil {
		t.Fatalf("MarkOf = %v, %v", ok, err)
	}
	want := Mark{SwitchID: "20261201T030000Z-abcdef", Kind: Hop, From: "old", To: "new", FromTopic: "app-pg15", ToTopic: "app-pg17",
		FromMessageID: "3:41:-1", FromCommitLSN: 0x1A2B3C4, FromCommitTime: time.Date(2026, 12, 1, 3, 0, 0, 123456000, time.UTC),
		ToMessageID: "5:2:-1", ToCommitLSN: 0x5000060, ToCommitTime: time.Date(2026, 12, 1, 3, 0, 0, 200000000, time.UTC)}
	if !m.FromCommitTime.Equal(want.FromCommitTime) || !m.ToCommitTime.Equal(want.ToCommitTime) {
		t.Fatalf("times %v %v", m.FromCommitTime, m.ToCommitTime)
	}
	m.FromCommitTime, m.ToCommitTime = want.FromCommitTime, want.ToCommitTime
	if *m != want {
		t.Fatalf("MarkOf = %+v\nwant     %+v", *m, want)
	}

	other := hopEvent()
	other.Table = "switch_marker"
	if _, ok, _ := MarkOf(other); ok {
		t.Fatal("a switch marker read as a cursor row")
	}
	update := hopEvent()
	update.Kind = event.KindUpdate
	if _, ok, _ := MarkOf(update); ok {
		t.Fatal("an update read as a cursor row")
	}
	for col, value := range map[string]*string{"to_message_id": str("x"), "from_commit_lsn": str("nope"), "kind": str("jump"), "to_cluster": nil, "from_commit_time": str("yesterday")} {
		ev := hopEvent()
		ev.New[col] = value
		var me *MarkError
		if _, ok, err := MarkOf(ev); !ok || !errors.As(err, &me) {
			t.Fatalf("%s=%v: ok %v, %v; want a *MarkError", col, value, ok, err)
		}
	}
}

func TestLostErrorSaysWhatWasLost(t *testing.T) {
	m, _, _ := MarkOf(hopEvent())
	want, _ := ParseID("5:2:-1")
	first, _ := ParseID("9:0:-1")
	err := &LostError{Topic: "app-pg17", Want: want, First: first, Hop: m,
		FirstHeader: event.Header{LSN: 0x6000000, CommitTime: time.Date(2026, 12, 1, 3, 10, 0, 0, time.UTC)}}
	for _, s := range []string{"switch 20261201T030000Z-abcdef", "app-pg17", "5:2:-1", "9:0:-1", "0/5000060", "0/6000000", "retention"} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("%q does not say %q", err.Error(), s)
		}
	}
}
