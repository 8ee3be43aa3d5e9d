package broker2pg

import (
	"errors"
	"fmt"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestBlameBlocksOnTheTargetsData: a failed statement blocks the apply, with
// table, column, message and LSN named, when its SQLSTATE class says that a
// retry fails again until the target is fixed (22, 23, 42, also for codes
// newer than pgerrcode); other failures are retried.
func TestBlameBlocksOnTheTargetsData(t *testing.T) {
	a := &applier{}
	id := pulsar.NewMessageID(5, 6, -1, -1)
	q := query{table: `"public"."items"`, msgID: id, lsn: 0x10}
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
		err := a.blame(q, &pgconn.PgError{Code: c.code, Message: "failed", Detail: "why", ColumnName: "Qty"})
		var be *BlockedError
		if errors.As(err, &be) != c.blocked {
			t.Errorf("SQLSTATE %s: %v, blocked %v", c.code, err, !c.blocked)
			continue
		}
		if c.blocked && (be.Table != q.table || be.Column != `"Qty"` || be.MessageID != id.String() || be.LSN != "0/10" || be.Code != c.code || be.Reason != "failed (why)") {
			t.Errorf("SQLSTATE %s: %#v", c.code, be)
		}
	}
	if err := a.blame(q, fmt.Errorf("conn closed")); IsBlocked(err) {
		t.Errorf("a lost connection blocks: %v", err)
	}
	if err := a.blame(query{}, &pgconn.PgError{Code: pgerrcode.UniqueViolation}); IsBlocked(err) {
		t.Errorf("a failure of pgtandem's own statements blocks: %v", err)
	}
}
