package broker2pg

import (
	"errors"
	"fmt"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"
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
