package broker2pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// waitCause waits until the apply stands blocked with a cause of type T and
// returns it.
func waitCause[T error](t *testing.T, svc *broker2pg.Service, what string) T {
	t.Helper()
	var cause T
	testwait.For(t, time.Minute, "blocked on "+what, func() error {
		err := svc.Blocked()
		if err == nil {
			return fmt.Errorf("not blocked (%v)", svc.Ready())
		}
		if !errors.As(err, &cause) {
			return fmt.Errorf("blocked on something else: %w", err)
		}
		return nil
	})
	return cause
}

// waitApplied waits until marker n, written by the test, is on the target.
func waitApplied(t *testing.T, dst *pgx.Conn, svc *broker2pg.Service, n int) {
	t.Helper()
	testwait.For(t, time.Minute, fmt.Sprintf("marker %d applied", n), func() error {
		var ok bool
		if err := dst.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM marker WHERE n = $1)`, n).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("not yet (service: %v)", svc.Ready())
		}
		return nil
	})
}

func isChange(kind event.Kind, table, column, value string) func(*event.Event) bool {
	return func(ev *event.Event) bool {
		row := ev.New
		if kind == event.KindDelete {
			row = ev.Old
		}
		return ev.Kind == kind && ev.Table == table && eventtest.Value(row, column) == value
	}
}

func queryRows(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(texts, " ")
}

// skipRecorded checks that pgtandem.apply_skips records the skip as done,
// by the message that carried the change.
func skipRecorded(t *testing.T, dst *pgx.Conn, lsn event.LSN, change int, msgID string) {
	t.Helper()
	var skippedAt *time.Time
	var recordedID *string
	err := dst.QueryRow(context.Background(), `SELECT skipped_at, message_id FROM pgtandem.apply_skips WHERE source_cluster = 'src' AND commit_lsn = $1::pg_lsn AND change = $2`,
		lsn.String(), change).Scan(&skippedAt, &recordedID)
	if err != nil || skippedAt == nil || recordedID == nil || *recordedID != msgID {
		t.Fatalf("apply_skips of change %d of %s: skipped_at %v, message %v, %v; want set, %s", change, lsn, skippedAt, recordedID, err, msgID)
	}
}

// TestMissingRowBlocksUntilSkipped covers an UPDATE and a DELETE whose row
// the target no longer holds as the source had it: the apply stops with a
// *broker2pg.MissingRowError naming the table, the old key, the commit LSN,
// the change and its message, found by applying the batch again change by
// change; nothing of that source transaction or after it is applied or
// acknowledged, and the lag grows. A skip of another change is refused; the
// skip of that change lets the apply pass over exactly it, and records so.
func TestMissingRowBlocksUntilSkipped(t *testing.T) {
	srcSrv, src := start(t, 15)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	bothSides(t, src, dst, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE items (id int PRIMARY KEY, v text);
		CREATE TABLE bag (a int, b text); ALTER TABLE bag REPLICA IDENTITY FULL;
		INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 5) g; INSERT INTO bag VALUES (1, 'one'), (2, 'two'), (2, 'two')`)
	topic := "persistent://public/default/missing-row"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)
	ctx := context.Background()

	// An UPDATE of four rows, one of them missing on the target: one
	// statement, then one change at a time.
	exec(t, dst, `DELETE FROM items WHERE id = 3`)
	began := time.Now()
	exec(t, src, `UPDATE items SET v = 'x' WHERE id <= 4`)
	committed := time.Now()
	exec(t, src, `INSERT INTO marker VALUES (2)`)
	lsn, change, msgID := servicetest.ChangeInTopic(t, b.URL(), topic, "the update of items 3", isChange(event.KindUpdate, "items", "id", "3"))
	mr := waitCause[*broker2pg.MissingRowError](t, svc, "the update of items 3")
	if mr.Table != `"public"."items"` || mr.Kind != "update" || mr.Key != `("id")=('3')` || mr.LSN != lsn.String() || mr.Change != change || mr.MessageID != msgID || mr.Matched != 0 {
		t.Fatalf("blocked with %#v; want the update of items key 3 at change %d of %s, message %s", mr, change, lsn, msgID)
	}
	waitHeldBack(t, b, topic, 2)
	checkNotApplied(t, dst, 2)
	if got := queryRows(t, dst, `SELECT id || ':' || v FROM items ORDER BY id`); got != "1:v1 2:v2 4:v4 5:v5" {
		t.Fatalf("target while blocked: %s; nothing of the blocked transaction may be applied", got)
	}
	// The lag counts from the commit time PostgreSQL wrote, on the wall
	// clock; began and committed are read on Go's monotonic clock. The two
	// drift by milliseconds (a CI run saw the lag 5 ms above the upper
	// bound), so the window has 100 ms of slack on each side, still far
	// below the second the apply has been blocked: a lag of 0, or one that
	// stopped growing when the apply blocked, fails.
	const clocks = 100 * time.Millisecond
	minLag := time.Since(committed) - clocks
	if lag := svc.Lag(); lag < minLag || lag > time.Since(began)+clocks {
		t.Fatalf("lag while blocked %s; want the age of the blocked transaction, between %s and %s", lag, minLag, time.Since(began)+clocks)
	}
	var blockedLSN string
	var blockedChange int
	if err := dst.QueryRow(ctx, `SELECT blocked_lsn::text, blocked_change FROM pgtandem.apply_progress`).Scan(&blockedLSN, &blockedChange); err != nil || blockedLSN != lsn.String() || blockedChange != change {
		t.Fatalf("apply_progress blocked at change %d of %s (%v); want %d of %s", blockedChange, blockedLSN, err, change, lsn)
	}

	var refused *broker2pg.SkipRefusedError
	if _, err := broker2pg.RecordSkip(ctx, dst, "src", lsn, change+1); !errors.As(err, &refused) {
		t.Fatalf("skip of a change the apply is not blocked at: %v, want a SkipRefusedError", err)
	}
	if at, err := broker2pg.RecordSkip(ctx, dst, "src", lsn, change); err != nil || at.Table != `"public"."items"` {
		t.Fatalf("skip: %+v, %v", at, err)
	}
	waitApplied(t, dst, svc, 2)
	if got := queryRows(t, dst, `SELECT id || ':' || v FROM items ORDER BY id`); got != "1:x 2:x 4:x 5:v5" {
		t.Fatalf("target after the skip: %s; want every other change of the transaction applied", got)
	}
	skipRecorded(t, dst, lsn, change, msgID)
	testwait.For(t, time.Minute, "lag 0 when idle and caught up", func() error {
		if lag := svc.Lag(); lag != 0 {
			return fmt.Errorf("lag %s", lag)
		}
		return nil
	})

	// A DELETE of two identical rows matched by the whole row, where the
	// target holds only one: the second delete is the one at fault.
	exec(t, dst, `DELETE FROM bag WHERE ctid = (SELECT min(ctid) FROM bag WHERE a = 2)`)
	exec(t, src, `DELETE FROM bag WHERE a = 2`)
	exec(t, src, `INSERT INTO marker VALUES (3)`)
	mr = waitCause[*broker2pg.MissingRowError](t, svc, "the second delete of bag (2, two)")
	lsn, change = event.LSN(0), 0
	if l, err := event.ParseLSN(mr.LSN); err == nil {
		lsn = l
	}
	firstLSN, first, _ := servicetest.ChangeInTopic(t, b.URL(), topic, "the first delete of bag 2", isChange(event.KindDelete, "bag", "a", "2"))
	if mr.Table != `"public"."bag"` || mr.Kind != "delete" || mr.Key != `("a", "b")=('2', 'two')` || lsn != firstLSN || mr.Change != first+1 || !mr.WholeRow {
		t.Fatalf("blocked with %#v; want the second delete of bag (2, two), change %d of %s", mr, first+1, firstLSN)
	}
	waitHeldBack(t, b, topic, 3)
	checkNotApplied(t, dst, 3)
	if got := queryRows(t, dst, `SELECT count(*)::text FROM bag WHERE a = 2`); got != "1" {
		t.Fatalf("target holds %s rows (2, two) while blocked, want the 1 it had", got)
	}
	if _, err := broker2pg.RecordSkip(ctx, dst, "src", lsn, mr.Change); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, dst, svc, 3)
	skipRecorded(t, dst, lsn, mr.Change, mr.MessageID)
	if err := eventtest.SameRows(src, dst, "bag"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestReplicaIdentityOfPartitionBlocks covers a partitioned table whose root
// has REPLICA IDENTITY FULL while its partitions keep their key as identity
// (capture's preflight refuses this, so the identity changes after capture
// started). An UPDATE that keeps the key arrives without any old row and
// blocks with a *broker2pg.ReplicaIdentityError instead of matching a row by
// guess; a move to another partition arrives as a DELETE whose old row is
// the key and NULLs, which matches nothing and blocks instead of leaving
// the row in both partitions.
func TestReplicaIdentityOfPartitionBlocks(t *testing.T) {
	srcSrv, src := start(t, 15)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	bothSides(t, src, dst, `CREATE TABLE marker (n int PRIMARY KEY);
		CREATE TABLE ev (id bigint, region text, payload text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu'); CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');
		INSERT INTO ev VALUES (1, 'eu', 'a'), (2, 'eu', 'b')`)
	topic := "persistent://public/default/partition-identity"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	exec(t, src, `ALTER TABLE ev REPLICA IDENTITY FULL`)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)

	exec(t, src, `UPDATE ev SET payload = 'b2' WHERE id = 2`)
	exec(t, src, `INSERT INTO marker VALUES (2)`)
	lsn, change, msgID := servicetest.ChangeInTopic(t, b.URL(), topic, "the update of ev 2", isChange(event.KindUpdate, "ev", "id", "2"))
	ri := waitCause[*broker2pg.ReplicaIdentityError](t, svc, "the update of ev 2")
	if ri.Table != `"public"."ev"` || ri.LSN != lsn.String() || ri.Change != change || ri.MessageID != msgID {
		t.Fatalf("blocked with %#v; want change %d of %s, message %s", ri, change, lsn, msgID)
	}
	waitHeldBack(t, b, topic, 2)
	checkNotApplied(t, dst, 2)
	if got := queryRows(t, dst, `SELECT ev::text FROM ev ORDER BY id`); got != "(1,eu,a) (2,eu,b)" {
		t.Fatalf("target while blocked: %s", got)
	}
	// The operator repairs the row by hand and passes over the change.
	exec(t, dst, `UPDATE ev SET payload = 'b2' WHERE id = 2`)
	if _, err := broker2pg.RecordSkip(context.Background(), dst, "src", lsn, change); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, dst, svc, 2)

	exec(t, src, `UPDATE ev SET region = 'us' WHERE id = 1`)
	exec(t, src, `INSERT INTO marker VALUES (3)`)
	mr := waitCause[*broker2pg.MissingRowError](t, svc, "the delete of ev 1 from eu")
	if mr.Table != `"public"."ev"` || mr.Kind != "delete" || mr.Key != `("id", "region", "payload")=('1', 'eu', NULL)` || !mr.WholeRow ||
		!strings.Contains(mr.Error(), "REPLICA IDENTITY FULL on every partition") {
		t.Fatalf("blocked with %#v", mr)
	}
	waitHeldBack(t, b, topic, 3)
	checkNotApplied(t, dst, 3)
	if got := queryRows(t, dst, `SELECT ev::text FROM ev ORDER BY id, region`); got != "(1,eu,a) (2,eu,b2)" {
		t.Fatalf("target while blocked: %s; the row must be neither moved nor copied", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestBlockedNamesTheFailingChange: a target transaction takes an earlier
// source transaction of another table and the one that fails, whose
// statement the target cannot even prepare (the target's key type has no
// equality). The block names the failing table, change, LSN and message,
// not the first of the batch; the earlier transaction is applied.
func TestBlockedNamesTheFailingChange(t *testing.T) {
	srcSrv, src := start(t, 15)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	exec(t, src, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE t (id jsonb PRIMARY KEY, v text); INSERT INTO t VALUES ('1', 'one')`)
	exec(t, dst, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE t (id json, v text); INSERT INTO t VALUES ('1', 'one')`)
	topic := "persistent://public/default/failing-table"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	exec(t, src, `INSERT INTO a SELECT generate_series(1, 100)`)
	exec(t, src, `UPDATE t SET v = 'two'`)
	exec(t, src, `INSERT INTO marker VALUES (2)`)
	// Everything is in the topic before the apply starts: the first target
	// transaction takes it all.
	waitMarkerInTopic(t, b, topic, 2)
	lsn, change, msgID := servicetest.ChangeInTopic(t, b.URL(), topic, "the update of t", isChange(event.KindUpdate, "t", "v", "two"))
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	be := waitCause[*broker2pg.BlockedError](t, svc, `"public"."t"`)
	if be.Table != `"public"."t"` || be.LSN != lsn.String() || be.Change != change || be.MessageID != msgID || be.Code != pgerrcode.UndefinedFunction {
		t.Fatalf("blocked with %v; want table \"public\".\"t\", change %d of %s, message %s, SQLSTATE 42883", be, change, lsn, msgID)
	}
	waitHeldBack(t, b, topic, 2)
	checkNotApplied(t, dst, 2)
	if got := queryRows(t, dst, `SELECT count(*)::text FROM a`); got != "100" {
		t.Fatalf("%s rows of a applied; want the 100 of the transaction before the failing one", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
