package pg2broker

import (
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// ackTracker turns the broker's acknowledgements, which arrive message by
// message on the client's goroutines, into the one position that may be
// confirmed to PostgreSQL: the end LSN of the last transaction whose
// messages, and every message before them, the broker has acknowledged.
//
// Messages are numbered in send order. A transaction's end is registered
// after its last message is sent, and becomes confirmable once the prefix of
// acknowledged messages covers it, so an acknowledgement arriving out of
// order can never move the position past a message still in flight.
type ackTracker struct {
	mu        sync.Mutex
	next      uint64          // number of the next message to send
	acked     uint64          // every message numbered below is acknowledged
	early     map[uint64]bool // acknowledged ahead of the prefix
	ends      []pendingEnd    // transaction ends waiting for the prefix, in order
	confirmed pglogrepl.LSN
	lag       time.Duration
	err       error
}

type pendingEnd struct {
	upTo       uint64 // messages numbered below belong to this and earlier transactions
	end        pglogrepl.LSN
	commitTime time.Time
}

func newAckTracker(start pglogrepl.LSN) *ackTracker {
	return &ackTracker{confirmed: start, early: map[uint64]bool{}}
}

// sent numbers a message about to be handed to the producer.
func (t *ackTracker) sent() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.next
	t.next++
	return n
}

// ack records the broker's answer for message n. The first error is kept
// and stops the position for good: what follows a failed message must not
// be confirmed.
func (t *ackTracker) ack(n uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		if t.err == nil {
			t.err = err
		}
		return
	}
	if t.err != nil {
		return
	}
	if n != t.acked {
		t.early[n] = true
		return
	}
	t.acked++
	for t.early[t.acked] {
		delete(t.early, t.acked)
		t.acked++
	}
	t.advance()
}

// txnEnd registers the end of a transaction whose messages have all been
// sent (none, for a transaction that was skipped).
func (t *ackTracker) txnEnd(end pglogrepl.LSN, commitTime time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ends = append(t.ends, pendingEnd{upTo: t.next, end: end, commitTime: commitTime})
	t.advance()
}

func (t *ackTracker) advance() {
	i := 0
	for ; i < len(t.ends) && t.ends[i].upTo <= t.acked && t.err == nil; i++ {
		if t.ends[i].end > t.confirmed {
			t.confirmed = t.ends[i].end
		}
		if !t.ends[i].commitTime.IsZero() {
			t.lag = time.Since(t.ends[i].commitTime)
		}
	}
	t.ends = t.ends[i:]
}

// idleAdvance moves the position to walEnd when nothing is in flight: on an
// idle database the server's keepalives are the only progress, and a slot
// that never advances holds WAL forever. inTxn tells that a transaction is
// being read, whose end is not known yet.
func (t *ackTracker) idleAdvance(walEnd pglogrepl.LSN, inTxn bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if inTxn || t.err != nil || len(t.ends) > 0 || t.acked != t.next {
		return
	}
	if walEnd > t.confirmed {
		t.confirmed = walEnd
		t.lag = 0
	}
}

// position returns the confirmable LSN and the first publish error.
func (t *ackTracker) position() (pglogrepl.LSN, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.confirmed, t.err
}

// inFlight returns how many messages await their acknowledgement.
func (t *ackTracker) inFlight() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next - t.acked
}

// lagSeconds is the time between the source commit and the broker's
// acknowledgement of the last transaction made durable; 0 once idle.
func (t *ackTracker) lagSeconds() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lag.Seconds()
}
