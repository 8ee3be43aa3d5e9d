package pg2broker

import (
	"context"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// readCoalesceShort and readCoalesceWait shape the replication socket's
// reads: a read that returned fewer than readCoalesceShort bytes found the
// socket drained, so the next one first waits readCoalesceWait.
//
// Why: the walsender sends each message of the slot with a send() of its
// own. A reader that keeps up with it takes one message per read, and each
// read of an empty socket parks the goroutine and wakes it again: while
// draining a backlog that was most of the capture's CPU, taken from the
// walsender it competes with (BenchmarkCaptureDrain). Waiting lets a read
// take a few dozen messages at once. The cost is latency: at most one wait
// (about 1 ms, the runtime's timer resolution on Linux) per change, well
// inside the producer's own 2 ms batching delay.
const (
	readCoalesceShort = 2048
	readCoalesceWait  = 500 * time.Microsecond
)

// coalescingConn is a replication connection's socket with coalesced reads
// (see readCoalesceWait). Deadlines and Close pass through; a wait does not
// observe the read deadline, so a deadline can be late by one wait.
type coalescingConn struct {
	net.Conn
	drained bool
	sleep   func(time.Duration) // time.Sleep; a test records the waits
}

func (c *coalescingConn) Read(p []byte) (int, error) {
	if c.drained {
		c.sleep(readCoalesceWait)
	}
	n, err := c.Conn.Read(p)
	c.drained = n < readCoalesceShort
	return n, err
}

// coalescingDial is a pgconn.DialFunc whose connections coalesce reads.
func coalescingDial(dial pgconn.DialFunc) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &coalescingConn{Conn: conn, sleep: time.Sleep}, nil
	}
}
