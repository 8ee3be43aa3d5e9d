package broker2pg

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"

	"github.com/pgtandem/pgtandem/event"
)

func text(s string) *string { return &s }

// TestDescribeKey: a blocked change names the old values it is matched by:
// the key columns, the whole old row for REPLICA IDENTITY FULL (NULL as
// NULL, quotes doubled, long values cut), the key from the new row when the
// change carries no old one.
func TestDescribeKey(t *testing.T) {
	keyed := []event.Column{{Name: "id", Key: true}, {Name: "Region", Key: true}, {Name: "v"}}
	full := []event.Column{{Name: "id", Key: true}, {Name: "note", Key: true}, {Name: "big", Key: true}}
	for _, c := range []struct {
		ev   *event.Event
		want string
	}{
		{&event.Event{Kind: event.KindDelete, Columns: keyed, Old: map[string]*string{"id": text("7"), "Region": text("eu")}}, `("id", "Region")=('7', 'eu')`},
		{&event.Event{Kind: event.KindUpdate, Columns: keyed, New: map[string]*string{"id": text("7"), "Region": text("eu"), "v": text("x")}}, `("id", "Region")=('7', 'eu')`},
		{&event.Event{Kind: event.KindDelete, ReplicaIdentity: "full", Columns: full, Old: map[string]*string{"id": text("1"), "note": text("it's"), "big": nil}}, `("id", "note", "big")=('1', 'it''s', NULL)`},
		{&event.Event{Kind: event.KindDelete, ReplicaIdentity: "full", Columns: full, Old: map[string]*string{"id": text("1"), "note": nil, "big": text(strings.Repeat("é", 100))}},
			`("id", "note", "big")=('1', NULL, '` + strings.Repeat("é", 64) + `…')`},
	} {
		if got := describeKey(c.ev); got != c.want {
			t.Errorf("describeKey(%v %v) = %s, want %s", c.ev.Kind, c.ev.Old, got, c.want)
		}
	}
}

// TestBlockedAtOneChangeSaysHowToSkip: a block at one change names its
// table, message, LSN and position and the exact skip command; a block that
// is not at one change suggests no skip. The named cause is found with
// errors.As through the BlockedError.
func TestBlockedAtOneChangeSaysHowToSkip(t *testing.T) {
	mr := &MissingRowError{Table: `"public"."items"`, Kind: "update", Key: `("id")=('3')`, LSN: "0/1A2B3C8", Change: 3, MessageID: "12:34:0"}
	err := fmt.Errorf("session: %w", &BlockedError{Table: mr.Table, MessageID: mr.MessageID, LSN: mr.LSN, Change: 3, Reason: mr.Error(), Err: mr, Source: "old", Target: "new"})
	want := []string{`apply blocked on table "public"."items" at message 12:34:0 (source lsn 0/1A2B3C8 change 3): the update of "public"."items" ("id")=('3')`,
		"matches no row on the target", "pgtandem apply skip --from old --to new --lsn 0/1A2B3C8 --change 3"}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	var got *MissingRowError
	if !errors.As(err, &got) || got != mr || !IsBlocked(err) {
		t.Errorf("errors.As finds %v, IsBlocked %v", got, IsBlocked(err))
	}
	mr.Matched = 2
	if !strings.Contains(mr.Error(), "matches 2 rows") {
		t.Errorf("two rows matched: %s", mr)
	}
	framing := &BlockedError{MessageID: "1:2:0", Reason: "topic framing: ..."}
	if strings.Contains(framing.Error(), "apply skip") {
		t.Errorf("a block that is not at one change suggests a skip: %s", framing)
	}
}

// TestCheckOldRow: an UPDATE published with REPLICA IDENTITY FULL but
// without an old row blocks with a *ReplicaIdentityError naming the change;
// every other change passes.
func TestCheckOldRow(t *testing.T) {
	id := pulsar.NewMessageID(4, 5, -1, -1)
	update := &event.Event{Kind: event.KindUpdate, Schema: "public", Table: "ev", ReplicaIdentity: "full", LSN: 0x30, Seq: 2, New: map[string]*string{"id": text("2")}}
	err := checkOldRow(update, id)
	var ri *ReplicaIdentityError
	var be *BlockedError
	if !errors.As(err, &ri) || !errors.As(err, &be) || be.Table != `"public"."ev"` || be.LSN != "0/30" || be.Change != 2 || be.MessageID != id.String() || be.batch {
		t.Fatalf("update without old row: %#v", err)
	}
	withOld := *update
	withOld.Old = map[string]*string{"id": text("2")}
	keyed := *update
	keyed.ReplicaIdentity = "default"
	for _, ev := range []*event.Event{&withOld, &keyed, {Kind: event.KindInsert, ReplicaIdentity: "full"}} {
		if err := checkOldRow(ev, id); err != nil {
			t.Errorf("%s identity %s old %v: %v", ev.Kind, ev.ReplicaIdentity, ev.Old, err)
		}
	}
}

// TestRowCountDiffers: a statement of one change that matched another
// number of rows than one is a *MissingRowError of that change; a statement
// of a batch is a batch failure, which strict order re-runs; pgtandem's own
// statements are not the data's fault and do not block.
func TestRowCountDiffers(t *testing.T) {
	q := query{table: `"public"."items"`, msgID: pulsar.NewMessageID(1, 2, -1, -1), lsn: 0x10, expect: 4}
	err := rowCountDiffers(q, 3, nil)
	var be *BlockedError
	if !errors.As(err, &be) || !be.batch || be.Change != 0 || be.Table != q.table {
		t.Fatalf("batch: %#v", err)
	}
	ev := &event.Event{Kind: event.KindDelete, LSN: 0x10, Seq: 5, Columns: []event.Column{{Name: "id", Key: true}}, Old: map[string]*string{"id": text("9")}}
	at := &changeAt{ev: ev, msgID: pulsar.NewMessageID(1, 7, -1, -1)}
	err = rowCountDiffers(query{table: q.table, expect: 1}, 0, at)
	var mr *MissingRowError
	if !errors.As(err, &mr) || !errors.As(err, &be) || be.batch || be.Change != 5 || mr.Key != `("id")=('9')` || mr.Kind != "delete" || mr.MessageID != at.msgID.String() || mr.LSN != "0/10" {
		t.Fatalf("one change: %#v %#v", be, mr)
	}
	if err := rowCountDiffers(query{sql: "UPDATE pgtandem.apply_progress", expect: 1}, 0, nil); IsBlocked(err) || err == nil {
		t.Fatalf("own statement: %v", err)
	}
}

// TestBatchFailureArmsStrictOrder: any failure of a batch (not only a
// unique violation) makes the service apply the transactions begun again in
// strict order, once; the same failure in strict order blocks.
func TestBatchFailureArmsStrictOrder(t *testing.T) {
	s := &Service{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.lastBegun.Store(0x80)
	batch := fmt.Errorf("apply: %w", &BlockedError{Table: `"public"."t"`, Code: pgerrcode.UndefinedFunction, batch: true})
	if !s.retryable(errors.Unwrap(batch).(*BlockedError)) || !s.retryStrict(batch) || s.strictUntil.Load() != 0x80 {
		t.Fatalf("batch failure: strict order until %d, want 0x80", s.strictUntil.Load())
	}
	if s.retryStrict(batch) {
		t.Fatal("a failure that remains in strict order armed it again instead of blocking")
	}
	s.lastBegun.Store(0x90)
	if s.retryStrict(&BlockedError{Table: `"public"."t"`, Code: pgerrcode.UndefinedFunction, Change: 1}) {
		t.Fatal("a failure of one change armed strict order")
	}
}

// TestLagIsAgeOfOldestPending: the service's lag is 0 when nothing is
// pending and otherwise the age of the oldest pending transaction; a
// message that ends a session unapplied counts as pending when no
// transaction was begun, never replacing an older one.
func TestLagIsAgeOfOldestPending(t *testing.T) {
	s := &Service{}
	if s.Lag() != 0 {
		t.Fatalf("nothing pending: lag %s", s.Lag())
	}
	now := time.Now()
	s.notePending(time.Time{}, now.Add(-3*time.Second))
	if lag := s.Lag(); lag < 3*time.Second || lag > time.Minute {
		t.Fatalf("pending since 3 s: lag %s", lag)
	}
	s.notePending(now)
	if lag := s.Lag(); lag < 3*time.Second {
		t.Fatalf("a later message replaced the oldest pending one: lag %s", lag)
	}
	if got := lagSince(now.Add(time.Second).UnixNano(), now); got != 0 {
		t.Errorf("a commit time ahead of this clock gives lag %s, want 0", got)
	}
}
