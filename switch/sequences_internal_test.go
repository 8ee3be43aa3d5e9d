package switchover

import "testing"

// TestSequenceReadSQL: names arrive quoted by format('%I.%I') and go into
// the statement as they are; each row carries the position of its name, so
// the reader can match rows that UNION ALL returns in any order.
func TestSequenceReadSQL(t *testing.T) {
	names := []string{`public.ev_big_id_seq`, `"My Schema"."Odd ""seq"""`, `public."order"`}
	want := `SELECT 0, last_value, is_called FROM public.ev_big_id_seq` +
		` UNION ALL SELECT 1, last_value, is_called FROM "My Schema"."Odd ""seq"""` +
		` UNION ALL SELECT 2, last_value, is_called FROM public."order"`
	if got := sequenceReadSQL(names); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got, want := sequenceReadSQL(names[:1]), `SELECT 0, last_value, is_called FROM public.ev_big_id_seq`; got != want {
		t.Fatalf("one sequence: got %s", got)
	}
}
