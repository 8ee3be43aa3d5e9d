package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// loadTransaction is pgbench's TPC-B-like transaction plus changes to the
// sample tables: an update of a row with extension, enum, array and json
// types, a new order and a partition move, a row in the keyless log. It is
// sent as one simple-protocol query: one implicit transaction, one round
// trip.
const loadTransaction = `
UPDATE pgbench_accounts SET abalance = abalance + %[2]d WHERE aid = %[3]d;
UPDATE pgbench_tellers SET tbalance = tbalance + %[2]d WHERE tid = %[4]d;
UPDATE pgbench_branches SET bbalance = bbalance + %[2]d WHERE bid = %[5]d;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%[4]d, %[5]d, %[3]d, %[2]d, now());
UPDATE customers SET balance = balance + %[2]d, seen_at = now(), prefs = prefs || jsonb_build_object('txn', %[1]d) WHERE id = %[6]d;
INSERT INTO orders VALUES (100000 + %[1]d, (ARRAY['eu', 'us', 'apac'])[%[1]d %% 3 + 1], %[6]d, %[2]d, now());
UPDATE orders SET region = CASE region WHEN 'eu' THEN 'us' WHEN 'us' THEN 'apac' ELSE 'eu' END WHERE id = %[7]d;
INSERT INTO audit_log VALUES (now(), 'load', 'txn %[1]d');
INSERT INTO load_ticks (txn) VALUES (%[1]d);`

// trimAuditLog deletes the oldest row of the keyless table. Applying it
// means a scan of the table on new (no key to look the row up by), so only
// every trimEvery-th transaction does it, as an application purging old
// log rows now and then would.
const (
	trimAuditLog = `DELETE FROM audit_log WHERE ctid = (SELECT min(ctid) FROM audit_log);`
	trimEvery    = 10
)

// writeLoad runs loadTransaction at a steady rate on one connection until
// stopped. It is owned by the run that starts it: stop waits for its
// goroutine.
type writeLoad struct {
	mu sync.Mutex
	// rowsThrough[n] is the rows changed by transactions 1..n, so that the
	// highest load_ticks.txn on new says how many rows were applied.
	rowsThrough []int64

	quit chan struct{}
	done chan struct{}
	err  error // set before done is closed
}

// startLoad connects and starts the load at rate transactions per second
// against a pgbench database of the given scale.
func startLoad(ctx context.Context, dsn string, scale, rate int) (*writeLoad, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect the write load: %w", err)
	}
	l := &writeLoad{rowsThrough: []int64{0}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer conn.Close(context.Background())
		l.err = l.run(ctx, conn, scale, rate)
	}()
	return l, nil
}

func (l *writeLoad) run(ctx context.Context, conn *pgx.Conn, scale, rate int) error {
	interval := time.Second / time.Duration(rate)
	next := time.Now()
	for txn := int64(1); ; txn++ {
		// Pacing on a schedule rather than sleeping after each transaction
		// keeps the rate steady when one transaction is slow.
		next = next.Add(interval)
		select {
		case <-l.quit:
			return nil
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
		sql := fmt.Sprintf(loadTransaction, txn, rand.IntN(10000)-5000, rand.IntN(100000*scale)+1,
			rand.IntN(10*scale)+1, rand.IntN(scale)+1, rand.IntN(20000)+1, rand.IntN(30000)+1)
		if txn%trimEvery == 0 {
			sql += trimAuditLog
		}
		results, err := conn.PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("write load, transaction %d: %w", txn, err)
		}
		var rows int64
		for _, r := range results {
			rows += r.CommandTag.RowsAffected()
		}
		l.mu.Lock()
		l.rowsThrough = append(l.rowsThrough, l.rowsThrough[txn-1]+rows)
		l.mu.Unlock()
	}
}

// committed returns how many load transactions have committed on old and
// the rows they changed.
func (l *writeLoad) committed() (txns, rows int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.rowsThrough) - 1
	return int64(n), l.rowsThrough[n]
}

// rowsThroughTxn returns the rows changed by load transactions 1..txn.
func (l *writeLoad) rowsThroughTxn(txn int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rowsThrough[min(max(txn, 0), int64(len(l.rowsThrough)-1))]
}

// stop ends the load after its transaction in flight and returns the error
// that ended it early, if any. Calling it again returns the same.
func (l *writeLoad) stop() error {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.done
	return l.err
}

// failure returns the error that ended the load early, nil while it runs.
func (l *writeLoad) failure() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}
