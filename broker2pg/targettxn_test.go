package broker2pg

import (
	"errors"
	"fmt"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/event"
)

// TestBlameBlocksOnTheTargetsData: a failed statement blocks the apply, with
// table, column, message and LSN named, when its SQLSTATE class says that a
// retry fails again until the target is fixed (22, 23, 42, also for codes
// newer than pgerrcode); other failures are retried. A statement of a batch
// names its first message and is marked for a strict re-run; a statement of
// one change names that change.
func TestBlameBlocksOnTheTargetsData(t *testing.T) {
	id := pulsar.NewMessageID(5, 6, -1, -1)
	q := query{table: `"public"."items"`, msgID: id, lsn: 0x10}
	changeID := pulsar.NewMessageID(5, 9, -1, -1)
	at := &changeAt{ev: &event.Event{LSN: 0x20, Seq: 3}, msgID: changeID}
	for _, c := range []struct {
		code    string
		blocked bool
	}{
		{pgerrcode.InvalidTextRepresentation, true},
		{pgerrcode.UniqueViolation, true},
		{pgerrcode.UndefinedColumn, true},
		{"22ZZZ", true},
		{pgerrcode.SerializationFailure, false},
		{pgerrcode.AdminShutdown, false},
	} {
		pgErr := &pgconn.PgError{Code: c.code, Message: "failed", Detail: "why", ColumnName: "Qty"}
		err := blame(q, pgErr, nil)
		var be *BlockedError
		if errors.As(err, &be) != c.blocked {
			t.Errorf("SQLSTATE %s: %v, blocked %v", c.code, err, !c.blocked)
			continue
		}
		if !c.blocked {
			continue
		}
		if be.Table != q.table || be.Column != `"Qty"` || be.MessageID != id.String() || be.LSN != "0/10" || be.Change != 0 || be.Code != c.code || be.Reason != "failed (why)" || !be.batch {
			t.Errorf("SQLSTATE %s in a batch: %#v", c.code, be)
		}
		if !errors.As(blame(q, pgErr, at), &be) || be.MessageID != changeID.String() || be.LSN != "0/20" || be.Change != 3 || be.batch {
			t.Errorf("SQLSTATE %s of one change: %#v, want change 3 of 0/20 at message %s", c.code, be, changeID)
		}
	}
	if err := blame(q, fmt.Errorf("conn closed"), nil); IsBlocked(err) {
		t.Errorf("a lost connection blocks: %v", err)
	}
	if err := blame(query{}, &pgconn.PgError{Code: pgerrcode.UniqueViolation}, nil); IsBlocked(err) {
		t.Errorf("a failure of pgtandem's own statements blocks: %v", err)
	}
}

// ackRecorder is a consumer that records cumulative acknowledgments.
type ackRecorder struct {
	pulsar.Consumer
	acked []pulsar.MessageID
}

func (r *ackRecorder) AckIDCumulative(id pulsar.MessageID) error {
	r.acked = append(r.acked, id)
	return nil
}

// TestAckWaitsForTheTargetsFlush: a message is acknowledged only once the
// target's flush position passes the WAL insert position at which it was
// handled, cumulatively for the newest one covered, and an idle applier
// polls for the flush only while no target transaction is open.
func TestAckWaitsForTheTargetsFlush(t *testing.T) {
	rec := &ackRecorder{}
	a := &applier{consumer: rec}
	id := func(entry int64) pulsar.MessageID { return pulsar.NewMessageID(1, entry, -1, 0) }
	handle := func(entry int64, insert pglogrepl.LSN) {
		a.insertLSN, a.unacked = insert, id(entry)
		if err := a.ack(); err != nil {
			t.Fatal(err)
		}
	}
	a.flushLSN = 0x100
	handle(1, 0x200)
	handle(2, 0x300)
	handle(3, 0x400)
	if len(rec.acked) != 0 || !a.awaitingFlush() {
		t.Fatalf("acked %v before the flush passed any commit (awaiting flush: %v)", rec.acked, a.awaitingFlush())
	}
	a.flushLSN = 0x300
	a.ackFlushed(a.flushLSN)
	if len(rec.acked) != 1 || rec.acked[0].EntryID() != 2 {
		t.Fatalf("flush at 0x300 acknowledged %v, want entry 2 alone (cumulative)", rec.acked)
	}
	a.targetTxn = &targetTxn{}
	if a.awaitingFlush() {
		t.Fatal("an open target transaction reads the flush with its commit: no poll needed")
	}
	a.targetTxn = nil
	a.flushLSN = 0x1000
	a.ackFlushed(a.flushLSN)
	if len(rec.acked) != 2 || rec.acked[1].EntryID() != 3 || a.awaitingFlush() {
		t.Fatalf("acknowledged %v, want entry 3 next and nothing waiting", rec.acked)
	}
	handle(4, 0x1000) // a skipped message relying on commits already flushed
	if len(rec.acked) != 3 || rec.acked[2].EntryID() != 4 {
		t.Fatalf("a message covered by the flush was not acknowledged at once: %v", rec.acked)
	}
	// Skipped messages redelivered out of order share one position: one
	// entry, and the acknowledgment is the newest message.
	handle(9, 0x2000)
	handle(7, 0x2000)
	handle(8, 0x3000)
	if len(a.flushWait) != 2 || a.flushWait[0].id.EntryID() != 9 {
		t.Fatalf("waiting %v, want entry 9 at 0x2000, then entry 8", a.flushWait)
	}
	a.ackFlushed(0x3000)
	if last := rec.acked[len(rec.acked)-1]; last.EntryID() != 9 {
		t.Fatalf("acknowledged %v last, want entry 9, the newest covered", last)
	}
}
