package switchover

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/cursor"
	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/pgtest"
)

// TestPauseStatementsArePrepared: once the switcher prepared its
// statements, the fence, the marker's write and look, the read of the
// sequences at the fence, the setval and the cut go out without pgx
// preparing any on the way (the sessions hold no more prepared statements
// than before), so each costs the write pause one round trip; and they run.
func TestPauseStatementsArePrepared(t *testing.T) {
	srv := pgtest.Start(t, 17)
	ctx := context.Background()
	var sessions []*session
	for _, name := range []string{"old", "new"} {
		sess, err := connect(ctx, Cluster{Name: name, DSN: srv.DSN("postgres")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sess.close)
		sessions = append(sessions, sess)
	}
	from, to := sessions[0], sessions[1]
	if _, err := from.conn.Exec(ctx, `CREATE SEQUENCE prepared_seq; SELECT setval('prepared_seq', 7)`); err != nil {
		t.Fatal(err)
	}
	s := &switcher{cfg: Config{Fence: []string{FencePgBouncer, FenceDatabase}, To: Cluster{Name: "new"}}, from: from, to: to,
		rec: &record{ToWasFenced: true}, seqNames: []string{"public.prepared_seq"}}
	if err := s.prepare(ctx); err != nil {
		t.Fatal(err)
	}
	prepared := func(sess *session) int {
		t.Helper()
		var n int
		if err := sess.conn.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements`, pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := []int{prepared(from), prepared(to)}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	if _, _, err := from.fence(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	if _, err := from.writeMarker(ctx, "m2"); err != nil {
		t.Fatal(err)
	}
	if seqs, _, err := from.readAtFence(ctx, s.seqNames, "new"); err != nil || len(seqs) != 1 || seqs[0].LastValue != 7 {
		t.Fatalf("read at the fence: %v, %v; want prepared_seq at 7", seqs, err)
	}
	seqs := make(chan []sequence, 1)
	seqs <- []sequence{{Name: "public.prepared_seq", LastValue: 42, IsCalled: true}}
	// The marker is there, but the apply never wrote its progress: the
	// look returns no commit position, which the scan refuses; what counts
	// is that the setval went with it and both were sent prepared.
	_, set, _ := to.waitMarker(ctx, "m1", "old", seqs)
	if !set {
		t.Fatal("the setval did not go with the look for the marker")
	}
	cut := &cursor.Mark{SwitchID: "s1", Kind: cursor.Cut, From: "old", To: "new", FromTopic: "a", ToTopic: "b",
		FromMessageID: "1:2:0", FromCommitLSN: event.LSN(1)}
	if err := to.writeCut(ctx, cut, true); err != nil {
		t.Fatal(err)
	}
	for i, sess := range sessions {
		if n := prepared(sess) - before[i]; n != 0 {
			t.Errorf("cluster %s: pgx prepared %d statements on the way", sess.name, n)
		}
	}
	var last int64
	if err := to.conn.QueryRow(ctx, `SELECT last_value FROM prepared_seq`, pgx.QueryExecModeSimpleProtocol).Scan(&last); err != nil || last != 42 {
		t.Fatalf("prepared_seq: %d, %v; want 42", last, err)
	}
}
