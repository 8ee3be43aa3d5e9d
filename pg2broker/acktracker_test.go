package pg2broker

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/event"
)

// The tracker's promise (FAULTS 1, 2): the position confirmed to PostgreSQL
// is the end LSN of a transaction only once the broker has acknowledged that
// transaction's messages and every message sent before them. These tests
// drive it the way stream.publish does: sent() per message, txnEnd() after a
// transaction's last message, ack() from the client's goroutines in any
// order.

func position(t *testing.T, tr *ackTracker) pglogrepl.LSN {
	t.Helper()
	pos, err := tr.position()
	if err != nil {
		t.Fatalf("position: unexpected error %v", err)
	}
	return pos
}

func wantPosition(t *testing.T, tr *ackTracker, want pglogrepl.LSN, when string) {
	t.Helper()
	if got := position(t, tr); got != want {
		t.Fatalf("%s: confirmed %s, want %s", when, got, want)
	}
}

// trackerModel is what the tracker must confirm, computed the slow way.
type trackerModel struct {
	start pglogrepl.LSN
	acked []bool        // by message number
	ends  []modelTxnEnd // registered transaction ends, in order
}

type modelTxnEnd struct {
	upTo uint64 // its messages and all earlier ones are numbered below
	end  pglogrepl.LSN
}

// confirmable is the end of the last registered transaction whose messages,
// and all messages before, are acknowledged.
func (m *trackerModel) confirmable() pglogrepl.LSN {
	prefix := uint64(slices.Index(m.acked, false))
	if prefix == math.MaxUint64 { // none unacknowledged
		prefix = uint64(len(m.acked))
	}
	pos := m.start
	for _, e := range m.ends {
		if e.upTo > prefix {
			break
		}
		pos = max(pos, e.end)
	}
	return pos
}

// TestAckTrackerRandomInterleavings sends transactions of 0 to 40 messages
// and acknowledges the messages in random order, interleaved with the
// sends, and compares the position with the model after every step.
func TestAckTrackerRandomInterleavings(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 1))
		start := pglogrepl.LSN(0x1000)
		tr := newAckTracker(start)
		m := &trackerModel{start: start}
		var unacked []uint64
		lsn := start
		txnLeft := 0 // messages of the open transaction still to send
		inTxn := false
		for step := 0; step < 400 || len(unacked) > 0 || inTxn; step++ {
			switch {
			case len(unacked) > 0 && (rng.IntN(2) == 0 || step >= 400):
				i := rng.IntN(len(unacked))
				n := unacked[i]
				unacked = append(unacked[:i], unacked[i+1:]...)
				tr.ack(n, nil)
				m.acked[n] = true
			case !inTxn:
				inTxn, txnLeft = true, rng.IntN(41)
			case txnLeft > 0:
				n := tr.sent()
				if n != uint64(len(m.acked)) {
					t.Fatalf("seed %d: sent() = %d, want %d", seed, n, len(m.acked))
				}
				m.acked = append(m.acked, false)
				unacked = append(unacked, n)
				txnLeft--
			default:
				lsn += pglogrepl.LSN(1 + rng.IntN(500))
				tr.txnEnd(lsn, time.Time{})
				m.ends = append(m.ends, modelTxnEnd{upTo: uint64(len(m.acked)), end: lsn})
				inTxn = false
			}
			if got, want := position(t, tr), m.confirmable(); got != want {
				t.Fatalf("seed %d step %d: confirmed %s, want %s", seed, step, got, want)
			}
		}
		if got := position(t, tr); got != lsn {
			t.Fatalf("seed %d: everything acknowledged, confirmed %s, want the last end %s", seed, got, lsn)
		}
		if n := tr.inFlight(); n != 0 {
			t.Fatalf("seed %d: %d in flight after all acks", seed, n)
		}
	}
}

// TestAckTrackerNeverPassesUnackedMessage acknowledges everything but the
// first message of a transaction: nothing after it may be confirmed.
func TestAckTrackerNeverPassesUnackedMessage(t *testing.T) {
	tr := newAckTracker(100)
	var first uint64
	for txn := range 5 {
		for i := range 3 {
			n := tr.sent()
			if txn == 1 && i == 0 {
				first = n
			}
		}
		tr.txnEnd(pglogrepl.LSN(200+txn*100), time.Time{})
	}
	for n := uint64(0); n < 15; n++ {
		if n != first {
			tr.ack(n, nil)
		}
	}
	wantPosition(t, tr, 200, "message 3 of 15 unacknowledged")
	if n := tr.inFlight(); n != 12 {
		t.Fatalf("in flight: %d, want 12 (message 3 and every one after it)", n)
	}
	tr.ack(first, nil)
	wantPosition(t, tr, 600, "all acknowledged")
}

// TestAckTrackerLargeTransaction covers FAULTS 2: a transaction of many
// messages is confirmed by its end only, never part of it, however its
// acknowledgements arrive; keepalives while it is read move nothing.
func TestAckTrackerLargeTransaction(t *testing.T) {
	const n = 100_000
	tr := newAckTracker(0x500)
	for range n {
		tr.sent()
	}
	// Batches are acknowledged in reverse, as a broker's batches may be.
	for batch := n/1000 - 1; batch >= 0; batch-- {
		for i := range 1000 {
			tr.ack(uint64(batch*1000+i), nil)
		}
	}
	tr.idleAdvance(0x9000, true)
	wantPosition(t, tr, 0x500, "all messages acknowledged, transaction end not read yet")
	tr.txnEnd(0x8000, time.Time{})
	wantPosition(t, tr, 0x8000, "transaction end read")

	// The same with the first message acknowledged last.
	tr = newAckTracker(0x500)
	for range n {
		tr.sent()
	}
	tr.txnEnd(0x8000, time.Time{})
	for i := n - 1; i >= 1; i-- {
		tr.ack(uint64(i), nil)
	}
	wantPosition(t, tr, 0x500, "first message unacknowledged")
	tr.ack(0, nil)
	wantPosition(t, tr, 0x8000, "all acknowledged")
	if len(tr.early) != 0 {
		t.Fatalf("%d early acknowledgements kept after the prefix caught up", len(tr.early))
	}
}

// TestAckTrackerChunkedMessage follows stream.sendLarge: the batching
// producer's messages are acknowledged (drained) before the chunked message
// is sent and awaited, and the messages after it follow.
func TestAckTrackerChunkedMessage(t *testing.T) {
	tr := newAckTracker(10)
	begin, small := tr.sent(), tr.sent()
	tr.ack(small, nil)
	tr.ack(begin, nil)
	large := tr.sent()
	wantPosition(t, tr, 10, "chunked message in flight")
	after, commit := tr.sent(), tr.sent()
	tr.txnEnd(20, time.Time{})
	tr.ack(after, nil)
	tr.ack(commit, nil)
	wantPosition(t, tr, 10, "chunked message in flight, later ones acknowledged")
	tr.ack(large, nil)
	wantPosition(t, tr, 20, "chunked message acknowledged")

	// A chunked send that fails stops the position for good, even when the
	// messages around it are acknowledged.
	failed := errors.New("message too large")
	tr = newAckTracker(10)
	tr.ack(tr.sent(), nil)
	tr.txnEnd(15, time.Time{})
	large = tr.sent()
	tr.ack(large, failed)
	tr.ack(tr.sent(), nil)
	tr.txnEnd(20, time.Time{})
	tr.idleAdvance(30, false)
	pos, err := tr.position()
	if !errors.Is(err, failed) || pos != 15 {
		t.Fatalf("after a failed chunked send: confirmed %s, error %v; want 15 and the send's error", pos, err)
	}
}

// TestAckTrackerPublishErrorIsFinal: after one refused message nothing is
// confirmed any more, whatever is acknowledged later, and the first error
// is the one reported.
func TestAckTrackerPublishErrorIsFinal(t *testing.T) {
	tr := newAckTracker(1)
	a, b, c := tr.sent(), tr.sent(), tr.sent()
	tr.txnEnd(2, time.Time{})
	first, second := errors.New("first"), errors.New("second")
	tr.ack(b, first)
	tr.ack(c, second)
	tr.ack(a, nil)
	pos, err := tr.position()
	if pos != 1 || !errors.Is(err, first) {
		t.Fatalf("confirmed %s, error %v; want 1 and the first error", pos, err)
	}
}

// TestAckTrackerIdleAdvance: keepalives move the position on an idle
// database only, and never backwards.
func TestAckTrackerIdleAdvance(t *testing.T) {
	tr := newAckTracker(100)
	tr.idleAdvance(50, false)
	wantPosition(t, tr, 100, "keepalive behind the start")
	tr.idleAdvance(150, false)
	wantPosition(t, tr, 150, "idle keepalive")
	tr.idleAdvance(160, true)
	wantPosition(t, tr, 150, "keepalive inside a transaction")
	n := tr.sent()
	tr.txnEnd(170, time.Time{})
	tr.idleAdvance(180, false)
	wantPosition(t, tr, 150, "keepalive with a message in flight")
	tr.ack(n, nil)
	wantPosition(t, tr, 170, "transaction acknowledged")
	tr.idleAdvance(190, false)
	wantPosition(t, tr, 190, "idle again")
	tr.sent()
	tr.idleAdvance(200, false)
	wantPosition(t, tr, 190, "keepalive with a message in flight whose transaction end is not registered")
}

// TestAckTrackerResume covers a restart: the new session's tracker starts
// at the slot's confirmed position; transactions the slot replays that are
// already on the topic are dropped by resume and registered without
// messages; the position never moves back to a replayed end and never
// passes the first transaction published again until its acknowledgement.
func TestAckTrackerResume(t *testing.T) {
	// Run 1 published A (end 0x200) and B (end 0x300) whole and C (commit
	// 0x380, end 0x400) up to seq 2 (BEGIN and two rows) before it was
	// killed; the slot had confirmed A's end only.
	tr := newAckTracker(0x200)
	r := newResume(&tail{lsn: 0x380, seq: 2})
	replay := []struct {
		commit, end pglogrepl.LSN
		rows        int
	}{{0x100, 0x200, 1}, {0x280, 0x300, 2}, {0x380, 0x400, 3}, {0x480, 0x500, 1}}
	var sent []uint64
	var published []string
	for _, txn := range replay {
		evs := []*event.Event{{Kind: event.KindBegin, LSN: event.LSN(txn.commit), Seq: 0}}
		for i := range txn.rows {
			evs = append(evs, &event.Event{Kind: event.KindInsert, LSN: event.LSN(txn.commit), Seq: 1 + i})
		}
		evs = append(evs, &event.Event{Kind: event.KindCommit, LSN: event.LSN(txn.commit), Seq: 1 + txn.rows, EndLSN: event.LSN(txn.end)})
		for _, ev := range evs {
			if !r.published(ev) {
				sent = append(sent, tr.sent())
				published = append(published, fmt.Sprintf("%s/%d", ev.LSN, ev.Seq))
			}
			if ev.Kind == event.KindCommit {
				tr.txnEnd(pglogrepl.LSN(ev.EndLSN), time.Time{})
			}
		}
	}
	want := []string{"0/380/3", "0/380/4", "0/480/0", "0/480/1", "0/480/2"}
	if fmt.Sprint(published) != fmt.Sprint(want) {
		t.Fatalf("published again %v, want %v", published, want)
	}
	wantPosition(t, tr, 0x300, "replayed transactions registered, nothing acknowledged")
	tr.ack(sent[1], nil)
	wantPosition(t, tr, 0x300, "C's commit acknowledged before its last row")
	tr.ack(sent[0], nil)
	wantPosition(t, tr, 0x400, "C acknowledged")
	for _, n := range sent[2:] {
		tr.ack(n, nil)
	}
	wantPosition(t, tr, 0x500, "all acknowledged")

	// A replayed transaction ending behind the slot's position never moves
	// it back.
	tr = newAckTracker(0x300)
	tr.txnEnd(0x200, time.Time{})
	wantPosition(t, tr, 0x300, "replayed transaction ending behind the start")
}

// TestResumeDropsWhatTheTopicHolds checks the resume point alone: an empty
// topic drops nothing; otherwise every message up to the tail's (LSN, seq),
// and nothing after, also when several transactions share nothing but
// order.
func TestResumeDropsWhatTheTopicHolds(t *testing.T) {
	if newResume(nil).published(&event.Event{LSN: 1}) {
		t.Fatal("empty topic: message dropped")
	}
	r := newResume(&tail{lsn: 0x50, seq: 1})
	for _, c := range []struct {
		lsn  event.LSN
		seq  int
		drop bool
	}{
		{0x40, 0, true}, {0x40, 7, true}, {0x50, 0, true}, {0x50, 1, true}, {0x50, 2, false}, {0x60, 0, false},
		// Once past the tail, resume drops nothing more.
		{0x50, 0, false},
	} {
		if got := r.published(&event.Event{LSN: c.lsn, Seq: c.seq}); got != c.drop {
			t.Fatalf("lsn %s seq %d: dropped %v, want %v", c.lsn, c.seq, got, c.drop)
		}
	}
}

// TestAckTrackerConcurrentAcks acknowledges from several goroutines, as
// the Pulsar client does, while a reader polls the position: every position
// it sees must have all messages up to that transaction acknowledged. Run
// with -race it also checks the locking.
func TestAckTrackerConcurrentAcks(t *testing.T) {
	const txns, perTxn, workers = 300, 7, 4
	tr := newAckTracker(0)
	var acked [txns * perTxn]atomic.Bool
	work := make(chan uint64, txns*perTxn)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			var held []uint64
			flush := func() {
				rng.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
				for _, n := range held {
					acked[n].Store(true)
					tr.ack(n, nil)
				}
				held = held[:0]
			}
			for n := range work {
				if held = append(held, n); len(held) == 5 {
					flush()
				}
			}
			flush()
		}()
	}
	stopReader := make(chan struct{})
	readerDone := make(chan error, 1)
	go func() {
		for {
			pos, _ := tr.position()
			// Transaction k ends at LSN k+1 and holds messages up to
			// (k+1)*perTxn.
			for n := range int(pos) * perTxn {
				if !acked[n].Load() {
					readerDone <- fmt.Errorf("confirmed %s while message %d is unacknowledged", pos, n)
					return
				}
			}
			select {
			case <-stopReader:
				readerDone <- nil
				return
			default:
			}
		}
	}()
	for k := range txns {
		for range perTxn {
			work <- tr.sent()
		}
		tr.txnEnd(pglogrepl.LSN(k+1), time.Time{})
	}
	close(work)
	wg.Wait()
	close(stopReader)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	wantPosition(t, tr, txns, "all acknowledged")
}

// TestAckTrackerLag: the lag is taken from the commit time of the last
// confirmed transaction, and drops to 0 when idle keepalives advance.
func TestAckTrackerLag(t *testing.T) {
	tr := newAckTracker(0)
	n := tr.sent()
	tr.txnEnd(10, time.Now().Add(-3*time.Second))
	if lag := tr.lagSeconds(); lag != 0 {
		t.Fatalf("lag before the acknowledgement: %v", lag)
	}
	tr.ack(n, nil)
	if lag := tr.lagSeconds(); lag < 3 {
		t.Fatalf("lag %v, want at least 3 s", lag)
	}
	tr.idleAdvance(20, false)
	if lag := tr.lagSeconds(); lag != 0 {
		t.Fatalf("lag when idle: %v, want 0", lag)
	}
}
