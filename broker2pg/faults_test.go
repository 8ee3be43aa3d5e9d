package broker2pg_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/event/eventpb"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// The load table has a key on the source and none on the target, so that a
// transaction applied twice leaves duplicate rows instead of being absorbed
// by ON CONFLICT.
const (
	loadSource = `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE load (txn int, i int, pad text, PRIMARY KEY (txn, i))`
	loadTarget = `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE load (txn int, i int, pad text)`
)

// loadPair is a source and a target with the load schema, and a broker
// into whose topic the source is captured.
type loadPair struct {
	srcSrv, dstSrv *pglocal.Server
	src, dst       *pgx.Conn
	broker         *brokertest.Broker
	topic          string
}

func startLoadPair(t *testing.T, topic string, targetOpts ...pgtest.Option) loadPair {
	t.Helper()
	p := loadPair{broker: brokertest.Start(t), topic: topic}
	p.srcSrv, p.src = start(t, 15)
	p.dstSrv, p.dst = start(t, 17, targetOpts...)
	exec(t, p.src, loadSource)
	exec(t, p.dst, loadTarget)
	// The target may run with synchronous_commit = off, and the apply does
	// not flush what committed before it: make the schema durable before
	// any kill.
	exec(t, p.dst, `CHECKPOINT`)
	captureStop(t, p.srcSrv, "src", p.broker.URL(), topic)
	return p
}

// writeLoad commits numbered transactions into load until stop is called;
// stop returns how many committed.
func writeLoad(t *testing.T, srv *pglocal.Server) (stop func() int) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var committed int
	var loadErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer conn.Close(context.Background())
		for n := 1; ctx.Err() == nil; n++ {
			rows := 1 + n%5
			if n%50 == 0 {
				rows = 2000
			}
			if _, err := conn.Exec(context.Background(), `INSERT INTO load SELECT $1, g, 'pad' FROM generate_series(1, $2) g`, n, rows); err != nil {
				loadErr = err
				return
			}
			committed = n
			time.Sleep(time.Millisecond)
		}
	}()
	return func() int {
		cancel()
		wg.Wait()
		if loadErr != nil {
			t.Fatal(loadErr)
		}
		return committed
	}
}

// waitLoadApplied waits until the target holds at least n of writeLoad's
// transactions and returns how many it holds.
func waitLoadApplied(t *testing.T, dst *pgx.Conn, n int, what string) int {
	t.Helper()
	var applied int
	testwait.For(t, 2*time.Minute, fmt.Sprintf("%d load transactions applied %s", n, what), func() error {
		if err := dst.QueryRow(context.Background(), `SELECT count(DISTINCT txn) FROM load`).Scan(&applied); err != nil {
			return err
		}
		if applied < n {
			return fmt.Errorf("%d applied", applied)
		}
		return nil
	})
	return applied
}

// TestBlockedUntilSchemaFixed covers FAULTS 21: a missing column, then a
// missing table, stop the apply with the object named in Ready and in
// apply_progress, nothing past it applied or acknowledged; once fixed, the
// apply continues by itself.
func TestBlockedUntilSchemaFixed(t *testing.T) {
	srcSrv, src := start(t, 15)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	exec(t, src, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE wide (id int PRIMARY KEY, extra text); CREATE TABLE "Later" (id int PRIMARY KEY)`)
	exec(t, dst, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE wide (id int PRIMARY KEY)`)
	topic := "persistent://public/default/blocked"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)

	exec(t, src, `INSERT INTO wide VALUES (1, 'needs the column')`)
	exec(t, src, `INSERT INTO marker VALUES (2)`)
	waitBlocked(t, svc, dst, `table "public"."wide" column "extra"`)
	waitHeldBack(t, b, topic, 2)
	checkNotApplied(t, dst, 2)
	if n, err := backlogOf(t, b, topic, catalog.SubscriptionName("dst")); err != nil || n == 0 {
		t.Fatalf("backlog while blocked = %d, %v; want the blocked messages unacknowledged", n, err)
	}
	exec(t, dst, `ALTER TABLE wide ADD COLUMN extra text`)
	waitMarker(t, src, dst, svc, 3)

	exec(t, src, `INSERT INTO "Later" VALUES (1)`)
	exec(t, src, `INSERT INTO marker VALUES (4)`)
	waitBlocked(t, svc, dst, `table "public"."Later"`)
	waitHeldBack(t, b, topic, 4)
	checkNotApplied(t, dst, 4)
	exec(t, dst, `CREATE TABLE "Later" (id int PRIMARY KEY)`)
	waitMarker(t, src, dst, svc, 5)
	if err := eventtest.SameRows(src, dst, "wide", `"Later"`, "marker"); err != nil {
		t.Fatal(err)
	}
	var reason *string
	if err := dst.QueryRow(context.Background(), `SELECT blocked_reason FROM pgtandem.apply_progress`).Scan(&reason); err != nil || reason != nil {
		t.Fatalf("blocked_reason after the fix = %v, %v; want NULL", reason, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func waitBlocked(t *testing.T, svc *broker2pg.Service, dst *pgx.Conn, want string) {
	t.Helper()
	testwait.For(t, time.Minute, "blocked on "+want, func() error {
		err := svc.Ready()
		if err == nil || !strings.HasPrefix(err.Error(), "blocked: ") || !strings.Contains(err.Error(), want) {
			return fmt.Errorf("state %v", err)
		}
		var reason *string
		if err := dst.QueryRow(context.Background(), `SELECT blocked_reason FROM pgtandem.apply_progress`).Scan(&reason); err != nil {
			return err
		}
		if reason == nil || !strings.Contains(*reason, want) {
			return fmt.Errorf("blocked_reason %v", reason)
		}
		return nil
	})
}

// waitHeldBack waits until the change behind a blocked one, marker n, has
// been in the apply's hands: the topic holds marker n's whole transaction,
// and the broker has since handed the subscription's backlog (which holds
// it) to the apply twice. The first complete hand-over after the marker
// held it, and a second starts only once the session that held it has
// ended, blocked: a marker still missing on the target then was held back,
// not late.
func waitHeldBack(t *testing.T, b *brokertest.Broker, topic string, n int) {
	t.Helper()
	waitMarkerInTopic(t, b, topic, n)
	servicetest.WaitHandedOverTwice(t, b.AdminURL(), topic, catalog.SubscriptionName("dst"))
}

// waitMarkerInTopic reads topic from its start until it holds the whole
// source transaction that inserted marker n; messages that are not events
// are passed over.
func waitMarkerInTopic(t *testing.T, b *brokertest.Broker, topic string, n int) {
	t.Helper()
	var markerLSN event.LSN
	servicetest.ChangeInTopic(t, b.URL(), topic, fmt.Sprintf("the commit of marker %d", n), func(ev *event.Event) bool {
		if ev.Kind == event.KindInsert && ev.Table == "marker" && eventtest.Value(ev.New, "n") == strconv.Itoa(n) {
			markerLSN = ev.LSN
		}
		return ev.Kind == event.KindCommit && markerLSN != 0 && ev.LSN == markerLSN
	})
}

func checkNotApplied(t *testing.T, dst *pgx.Conn, marker int) {
	t.Helper()
	var applied bool
	if err := dst.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM marker WHERE n = $1)`, marker).Scan(&applied); err != nil || applied {
		t.Fatalf("marker %d behind the blocked change applied: %v, %v", marker, applied, err)
	}
}

// TestBlockedOnUndecodableMessage covers FAULTS 22: a message that is not an
// event stops the apply, which names its message id and applies nothing
// after it.
func TestBlockedOnUndecodableMessage(t *testing.T) {
	topic := "persistent://public/default/garbage"
	srcSrv, src, dst, svc, b := appliedThenCaptureStopped(t, topic)
	producer := foreignProducer(t, b.URL(), topic)
	var system string
	if err := src.QueryRow(context.Background(), `SELECT system_identifier::text FROM pg_control_system()`).Scan(&system); err != nil {
		t.Fatal(err)
	}
	// A header that lets the capture resume after it (the transaction at
	// 0/1, open), and a change no consumer can read.
	payload, err := proto.Marshal(&eventpb.Frame{FormatVersion: event.Version, SystemId: system, CommitLsn: 1, FirstChange: 1,
		Changes: []*eventpb.Change{{Op: 42}}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := producer.Send(context.Background(), &pulsar.ProducerMessage{Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	producer.Close()
	captureStop(t, srcSrv, "src", b.URL(), topic)
	exec(t, src, `INSERT INTO marker VALUES (2)`)
	testwait.For(t, time.Minute, "blocked on the undecodable message", func() error {
		if err := svc.Ready(); err == nil || !strings.Contains(err.Error(), "message "+id.String()) {
			return fmt.Errorf("state %v, want blocked at message %s", err, id)
		}
		return nil
	})
	waitHeldBack(t, b, topic, 2)
	checkNotApplied(t, dst, 2)
}

// TestIdentityMismatchRefuses covers the stored source identity: a target
// whose apply_progress belongs to another source system refuses to apply.
func TestIdentityMismatchRefuses(t *testing.T) {
	srcSrv, src := start(t, 15)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	bothSides(t, src, dst, `CREATE TABLE marker (n int PRIMARY KEY)`)
	topic := "persistent://public/default/identity"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	exec(t, dst, `UPDATE pgtandem.apply_progress SET source_system = '42'`)
	exec(t, src, `INSERT INTO marker VALUES (2)`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := servicetest.NewApply(t, dstSrv, "src", "dst", b.URL(), topic).Run(ctx)
	var ie *broker2pg.IdentityError
	if !errors.As(err, &ie) || !broker2pg.IsFatal(err) || ie.StoredSystem != "42" {
		t.Fatalf("Run = %v, want an IdentityError", err)
	}
	checkNotApplied(t, dst, 2)
}

// TestTwoReplicasApplyOnce covers FAULTS 23: two broker2pg on one
// subscription; only the active one applies; when it stops under load the
// standby takes over, and no transaction is applied twice.
func TestTwoReplicasApplyOnce(t *testing.T) {
	p := startLoadPair(t, "persistent://public/default/replicas")
	srcSrv, src, dstSrv, dst, b, topic := p.srcSrv, p.src, p.dstSrv, p.dst, p.broker, p.topic
	first, stopFirst := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, first, 1)
	second, _ := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	testwait.For(t, time.Minute, "second replica subscribed as standby", func() error {
		if err := second.Ready(); err == nil || !strings.HasPrefix(err.Error(), "standby") {
			return fmt.Errorf("second replica: %v, want standby", err)
		}
		return nil
	})
	stopLoad := writeLoad(t, srcSrv)
	atStop := waitLoadApplied(t, dst, 60, "by the first replica under load")
	if err := stopFirst(); err != nil {
		t.Fatal(err)
	}
	// The load is still running: the second replica takes over under it.
	waitLoadApplied(t, dst, atStop+20, "by the second replica after the first stopped")
	// Ready() is a snapshot: a replica whose session restarted (as one
	// under CPU starvation may) is a standby until the broker names it
	// active again, with rows it applied already on the target.
	testwait.For(t, time.Minute, "the second replica reporting ready after applying", func() error {
		return second.Ready()
	})
	txns := stopLoad()
	waitMarker(t, src, dst, second, 2)
	if err := eventtest.SameRows(src, dst, "load"); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d transactions applied once across the switch of replicas", txns)
}

// TestTargetKilledWithAsyncCommit covers FAULTS 5: the target runs with
// synchronous_commit = off and is killed under load; nothing the target
// lost was acknowledged, and nothing is applied twice.
func TestTargetKilledWithAsyncCommit(t *testing.T) {
	p := startLoadPair(t, "persistent://public/default/target-kill", pgtest.WithSetting("synchronous_commit", "off"))
	srcSrv, src, dstSrv, dst, b, topic := p.srcSrv, p.src, p.dstSrv, p.dst, p.broker, p.topic
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)
	stopLoad := writeLoad(t, srcSrv)
	ctx := context.Background()
	applied := 0
	for i := 0; i < 3; i++ {
		// Each kill comes while the apply is committing the load, after
		// it has come back from the previous one.
		applied = waitLoadApplied(t, pgtest.Connect(t, dstSrv, "postgres"), applied+20, fmt.Sprintf("before kill %d of the target", i+1))
		if err := dstSrv.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		if err := dstSrv.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	txns := stopLoad()
	dst = pgtest.Connect(t, dstSrv, "postgres")
	waitMarker(t, src, dst, svc, 2)
	if err := eventtest.SameRows(src, dst, "load"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d transactions, 3 kills of the target: applied exactly once", txns)
}

// TestOriginsNotRecaptured checks that what broker2pg applies into B is not
// captured by B's own pg2broker: on PostgreSQL 15 through the Origin message,
// on 17 through origin 'none'.
func TestOriginsNotRecaptured(t *testing.T) {
	for _, pair := range [][2]int{{17, 15}, {15, 17}} {
		t.Run(fmt.Sprintf("into-pg%d", pair[1]), func(t *testing.T) {
			t.Parallel()
			aSrv, a := start(t, pair[0])
			bSrv, bConn := start(t, pair[1])
			br := brokertest.Start(t)
			bothSides(t, a, bConn, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE local_b (id int PRIMARY KEY)`)
			topicA := "persistent://public/default/origin-a"
			topicB := "persistent://public/default/origin-b"
			captureStop(t, aSrv, "src", br.URL(), topicA)
			captureStop(t, bSrv, "dst", br.URL(), topicB)
			svc, _ := servicetest.Apply(t, bSrv, "src", "dst", br.URL(), topicA)
			waitMarker(t, a, bConn, svc, 1)
			exec(t, a, `INSERT INTO marker SELECT generate_series(2, 100)`)
			waitMarker(t, a, bConn, svc, 101)
			exec(t, bConn, `INSERT INTO local_b VALUES (1)`)
			txns := eventtest.ReadTxns(t, br.URL(), topicB, 1, time.Minute)
			if len(txns) != 1 || txns[0].Changes[0].Table != "local_b" {
				for _, tx := range txns {
					t.Logf("captured on B: %s.%s (%d changes)", tx.Changes[0].Schema, tx.Changes[0].Table, len(tx.Changes))
				}
				t.Fatalf("B's topic holds %d transactions, want only B's own one", len(txns))
			}
		})
	}
}

// TestStartAfterLSN covers a target cloned from a physical copy: it already
// holds what committed up to the clone's LSN, and broker2pg started with
// StartAfterLSN applies only what came after (the target's table has no key,
// so a transaction applied again would show as duplicates).
func TestStartAfterLSN(t *testing.T) {
	p := startLoadPair(t, "persistent://public/default/clone")
	src, dstSrv, dst, b, topic := p.src, p.dstSrv, p.dst, p.broker, p.topic
	for n := 1; n <= 10; n++ {
		exec(t, src, `INSERT INTO load SELECT $1, g, 'before' FROM generate_series(1, 3) g`, n)
	}
	var clone pglogrepl.LSN
	if err := src.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()`).Scan(&clone); err != nil {
		t.Fatal(err)
	}
	exec(t, dst, `INSERT INTO load SELECT n, g, 'before' FROM generate_series(1, 10) n, generate_series(1, 3) g`)
	for n := 11; n <= 20; n++ {
		exec(t, src, `INSERT INTO load SELECT $1, g, 'after' FROM generate_series(1, 3) g`, n)
	}
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic, func(c *broker2pg.Config) { c.StartAfterLSN = clone })
	waitMarker(t, src, dst, svc, 1)
	if err := eventtest.SameRows(src, dst, "load"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestUniqueSwapInOneBatch: the source swaps the values of a unique column
// that is not the key through an intermediate value. Compacted into one
// statement per table, the swap would violate the unique index on the
// target mid-statement; the apply must still get there, in source order.
func TestUniqueSwapInOneBatch(t *testing.T) {
	srcSrv, src := start(t, 17)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	bothSides(t, src, dst, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE seats (id int PRIMARY KEY, seat int UNIQUE, who text)`)
	exec(t, src, `INSERT INTO seats VALUES (1, 10, 'ann'), (2, 20, 'bob')`)
	exec(t, dst, `INSERT INTO seats VALUES (1, 10, 'ann'), (2, 20, 'bob')`)
	topic := "persistent://public/default/swap"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)
	exec(t, src, `BEGIN; UPDATE seats SET seat = 0 WHERE id = 1; UPDATE seats SET seat = 10 WHERE id = 2; UPDATE seats SET seat = 20 WHERE id = 1; COMMIT`)
	waitMarker(t, src, dst, svc, 2)
	if err := eventtest.SameRows(src, dst, "seats", "marker"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestKeylessUpdatesInOneStatement updates every row of a large table
// without key in one source transaction, and in another updates a row twice
// (the second update matches the row the first produced) and one of two
// identical rows: each update changes exactly one row, and the big
// transaction is applied in a pass over the table, not a scan per row.
func TestKeylessUpdatesInOneStatement(t *testing.T) {
	srcSrv, src := start(t, 15)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	bothSides(t, src, dst, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE bag (a int, b text); ALTER TABLE bag REPLICA IDENTITY FULL`)
	load := `INSERT INTO bag SELECT g % 20000, 'v' || (g % 7) FROM generate_series(1, 40000) g; INSERT INTO bag VALUES (-1, 'twin'), (-1, 'twin')`
	exec(t, src, load)
	exec(t, dst, load)
	topic := "persistent://public/default/keyless-updates"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)
	began := time.Now()
	exec(t, src, `UPDATE bag SET b = b || '+' WHERE a >= 0`)
	waitMarker(t, src, dst, svc, 2)
	t.Logf("40,000 updates of a keyless table of 40,002 rows applied in %s", time.Since(began).Round(time.Millisecond))
	exec(t, src, `BEGIN;
		UPDATE bag SET b = 'x' WHERE ctid = (SELECT ctid FROM bag WHERE a = 5 LIMIT 1);
		UPDATE bag SET a = 6, b = 'y' WHERE b = 'x';
		UPDATE bag SET b = 'one' WHERE ctid = (SELECT ctid FROM bag WHERE a = -1 LIMIT 1);
		UPDATE bag SET a = 7 WHERE a = 6 AND b = 'y';
		COMMIT`)
	waitMarker(t, src, dst, svc, 3)
	if err := eventtest.SameRows(src, dst, "bag", "marker"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestBacklogEmptyWhenCaughtUp checks that once everything is applied the
// subscription holds nothing unacknowledged, also after a restart that
// redelivers what the target already holds: `pgtandem status` must show an
// idle pipeline as idle.
func TestBacklogEmptyWhenCaughtUp(t *testing.T) {
	srcSrv, src := start(t, 17)
	dstSrv, dst := start(t, 17)
	b := brokertest.Start(t)
	bothSides(t, src, dst, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE t (id int PRIMARY KEY)`)
	topic := "persistent://public/default/backlog"
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	for i := range 5 {
		exec(t, src, `INSERT INTO t VALUES ($1)`, i)
	}
	waitMarker(t, src, dst, svc, 1)
	backlogZero := func(when string) {
		testwait.For(t, 30*time.Second, "empty backlog "+when, func() error {
			n, err := backlogOf(t, b, topic, catalog.SubscriptionName("dst"))
			if err == nil && n != 0 {
				err = fmt.Errorf("backlog %d", n)
			}
			return err
		})
	}
	backlogZero("when caught up")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Redeliver everything: the position on the target skips it all, and
	// the skipped messages must be acknowledged too.
	resp, err := http.Post(b.AdminURL()+"/admin/v2/persistent/public/default/backlog/subscription/"+catalog.SubscriptionName("dst")+"/resetcursor/0", "application/json", nil)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("reset cursor: %v %v", err, resp)
	}
	resp.Body.Close()
	svc, stop = servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	backlogZero("after a redelivery of applied transactions")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestFramingGapBlocks writes a transaction with a message missing into the
// topic: the first session ends at it and the next one, from the last
// acknowledged message, meets it again, which makes it a blocked apply that
// status, metrics and /readyz show, with nothing acknowledged past it.
func TestFramingGapBlocks(t *testing.T) {
	topic := "persistent://public/default/gap"
	_, _, dst, svc, b := appliedThenCaptureStopped(t, topic)
	producer := foreignProducer(t, b.URL(), topic)
	lsn := uint64(0xFF_00000000)
	marker := &eventpb.Relation{Schema: "public", Table: "marker", ReplicaIdentity: eventpb.ReplicaIdentity_REPLICA_IDENTITY_DEFAULT,
		Columns: []*eventpb.Column{{Name: "n", Type: "integer", Key: true}}}
	insert := func(n string) *eventpb.Change {
		return &eventpb.Change{Op: eventpb.Op_OP_INSERT, New: &eventpb.Tuple{Kinds: []byte{event.KindText}, Values: [][]byte{[]byte(n)}}}
	}
	// Fragments 0 and 2 of a transaction of three changes: fragment 1, with
	// change 2, is missing.
	for _, f := range []*eventpb.Frame{
		{FormatVersion: event.Version, CommitLsn: lsn, FirstChange: 1, Relations: []*eventpb.Relation{marker}, Changes: []*eventpb.Change{insert("2")}},
		{FormatVersion: event.Version, CommitLsn: lsn, EndLsn: lsn + 8, Fragment: 2, FirstChange: 3, LastFragment: true, TotalChanges: 3,
			Relations: []*eventpb.Relation{marker}, Changes: []*eventpb.Change{insert("3")}},
	} {
		payload, err := proto.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := producer.Send(context.Background(), &pulsar.ProducerMessage{Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, time.Minute, "blocked on the gap", func() error {
		if err := svc.Ready(); err == nil || !strings.Contains(err.Error(), "topic framing: seq 3") {
			return fmt.Errorf("state %v, want blocked on the gap", err)
		}
		return nil
	})
	var reason string
	if err := dst.QueryRow(context.Background(), `SELECT coalesce(blocked_reason, '') FROM pgtandem.apply_progress`).Scan(&reason); err != nil || !strings.Contains(reason, "framing") {
		t.Fatalf("apply_progress blocked_reason %q, %v", reason, err)
	}
	if n, err := backlogOf(t, b, topic, catalog.SubscriptionName("dst")); err != nil || n == 0 {
		t.Fatalf("backlog %d, %v: the broken transaction must stay unacknowledged", n, err)
	}
	checkNotApplied(t, dst, 2)
}

// appliedThenCaptureStopped runs a capture of a PostgreSQL 17 into topic
// and an apply into another until a marker is applied, then stops the
// capture: the tests then write into the topic themselves.
func appliedThenCaptureStopped(t *testing.T, topic string) (srcSrv *pglocal.Server, src, dst *pgx.Conn, svc *broker2pg.Service, b *brokertest.Broker) {
	t.Helper()
	srcSrv, src = start(t, 17)
	dstSrv, dst := start(t, 17)
	b = brokertest.Start(t)
	bothSides(t, src, dst, `CREATE TABLE marker (n int PRIMARY KEY)`)
	stopCapture := captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, _ = servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	waitMarker(t, src, dst, svc, 1)
	if err := stopCapture(); err != nil {
		t.Fatal(err)
	}
	return srcSrv, src, dst, svc, b
}

// foreignProducer is a producer of the test's own on topic, as another
// application writing into a pgtandem topic would have.
func foreignProducer(t *testing.T, url, topic string) pulsar.Producer {
	t.Helper()
	client, err := pulsarclient.New(pulsarclient.Options{URL: url, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	producer, err := client.CreateProducer(pulsar.ProducerOptions{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	return producer
}

// TestIdleApplyAcknowledgesWhatItApplied: commits are asynchronous and
// acknowledged once flushed; once the source goes quiet, the idle apply
// has the target flush and acknowledges every message, leaving no backlog
// for the next start to receive again.
func TestIdleApplyAcknowledgesWhatItApplied(t *testing.T) {
	p := startLoadPair(t, "persistent://public/default/idle-ack")
	svc, stop := servicetest.Apply(t, p.dstSrv, "src", "dst", p.broker.URL(), p.topic)
	for n := 1; n <= 5; n++ {
		waitMarker(t, p.src, p.dst, svc, n)
	}
	r, err := broker2pg.NewBacklogReader(p.broker.AdminURL(), "", pulsarclient.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "no backlog once the apply is idle", func() error {
		n, err := r.Backlog(context.Background(), p.topic, catalog.SubscriptionName("dst"))
		if err == nil && n != 0 {
			err = fmt.Errorf("%d messages not acknowledged", n)
		}
		return err
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
