package broker2pg

import (
	"slices"
	"testing"

	"github.com/pgtandem/pgtandem/event"
)

// TestTableHandoffSkip: a change of a table with a per-table handoff is
// skipped up to and including that LSN, a TRUNCATE keeps the tables whose
// copy does not hold it yet, and tables without a handoff are never skipped.
func TestTableHandoffSkip(t *testing.T) {
	resumed := event.TableName{Schema: "public", Table: "resumed"}
	other := event.TableName{Schema: "public", Table: "other"}
	h := tableHandoffs{resumed: 100}
	change := func(kind event.Kind, name event.TableName, lsn event.LSN) *event.Event {
		return &event.Event{Kind: kind, Schema: name.Schema, Table: name.Table, LSN: lsn}
	}
	for _, c := range []struct {
		ev   *event.Event
		skip bool
	}{
		{change(event.KindInsert, resumed, 99), true},
		{change(event.KindUpdate, resumed, 100), true},
		{change(event.KindDelete, resumed, 101), false},
		{change(event.KindInsert, other, 50), false},
		{&event.Event{Kind: event.KindMessage, LSN: 50}, false},
	} {
		if got := h.skip(c.ev); got != c.skip {
			t.Errorf("%s of %s at %d: skip %v, want %v", c.ev.Kind, c.ev.Table, c.ev.LSN, got, c.skip)
		}
	}
	var none tableHandoffs
	if none.skip(change(event.KindInsert, resumed, 1)) {
		t.Error("skipped without handoffs")
	}
	trunc := &event.Event{Kind: event.KindTruncate, LSN: 100, Tables: []event.TableName{resumed, other}}
	if h.skip(trunc) || !slices.Equal(trunc.Tables, []event.TableName{other}) {
		t.Errorf("TRUNCATE of both at 100: tables left %v, want only %v", trunc.Tables, other)
	}
	trunc = &event.Event{Kind: event.KindTruncate, LSN: 100, Tables: []event.TableName{resumed}}
	if !h.skip(trunc) {
		t.Error("TRUNCATE of the resumed table alone at its handoff not skipped")
	}
}
