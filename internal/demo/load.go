package demo

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// loadTransaction is pgbench's TPC-B-like transaction plus changes to the
// sample tables: an update of a row with extension, enum, array and json
// types, a new order and a partition move, a row in the keyless log. It is
// sent as one simple-protocol query: one implicit transaction, one round
// trip, and what PgBouncer's transaction pooling serves.
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
// every occasionalEvery-th transaction does it, as an application purging
// old log rows now and then would. signUp adds a customer, whose id comes
// from the bigserial's sequence: after a switch it is a duplicate key
// unless the switch set the sequence on the cluster clients moved to.
const (
	trimAuditLog    = `DELETE FROM audit_log WHERE ctid = (SELECT min(ctid) FROM audit_log);`
	signUp          = `INSERT INTO customers (email, tier, balance) VALUES ('signup%d@example.com', 'free', 0);`
	occasionalEvery = 10
)

// clientTxn is one load transaction as its client saw it.
type clientTxn struct {
	// Scheduled is when it was due to start: its latency counts from
	// there, as pgbench --rate counts it, so that a transaction held up by
	// the one before waits too.
	Scheduled, End time.Time
	Failed         bool
}

func (x clientTxn) latency() time.Duration { return x.End.Sub(x.Scheduled) }

// maxFailuresLogged bounds the failed transactions written to demo.log.
const maxFailuresLogged = 10

// writeLoad runs loadTransaction at a steady rate on one connection, the
// application's client, until stopped; start continues it after a stop
// with the next transaction number. Each run is owned by the rehearsal
// that starts it: stop waits for its goroutine. A failed transaction is
// counted and logged, and the load goes on (on a new connection when the
// one it had is broken): the rehearsal reports the count.
type writeLoad struct {
	dsn         string
	scale, rate int
	log         *slog.Logger

	mu sync.Mutex
	// rowsThrough[n] is the rows changed by transactions 1..n, so that the
	// highest load_ticks.txn on the other cluster says how many rows were
	// applied.
	rowsThrough []int64
	// txns[n-1] is transaction n as its client saw it.
	txns   []clientTxn
	failed int64
	// startedAt is when the load last started.
	startedAt time.Time

	quit chan struct{}
	done chan struct{}
}

func newLoad(dsn string, scale, rate int, log *slog.Logger) *writeLoad {
	return &writeLoad{dsn: dsn, scale: scale, rate: rate, log: log, rowsThrough: []int64{0}}
}

// start connects and runs the load until stop or the end of ctx.
func (l *writeLoad) start(ctx context.Context) error {
	conn, err := l.connect(ctx)
	if err != nil {
		return fmt.Errorf("connect the write load to %s: %w", l.dsn, err)
	}
	l.quit, l.done = make(chan struct{}), make(chan struct{})
	l.mu.Lock()
	l.startedAt = time.Now()
	l.mu.Unlock()
	go func() {
		defer close(l.done)
		l.run(ctx, conn)
	}()
	return nil
}

func (l *writeLoad) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, l.dsn)
}

func (l *writeLoad) run(ctx context.Context, conn *pgx.Conn) {
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	interval := time.Second / time.Duration(l.rate)
	next := time.Now()
	for {
		// Pacing on a schedule rather than sleeping after each transaction
		// keeps the rate steady when one transaction is slow.
		next = next.Add(interval)
		select {
		case <-l.quit:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		txn, _ := l.committed()
		txn++
		rows, err := l.transaction(ctx, &conn, txn)
		if ctx.Err() != nil {
			return
		}
		l.record(txn, next, rows, err)
	}
}

// transaction runs load transaction txn, connecting again first when the
// connection was lost.
func (l *writeLoad) transaction(ctx context.Context, conn **pgx.Conn, txn int64) (int64, error) {
	if *conn == nil || (*conn).IsClosed() {
		c, err := l.connect(ctx)
		if err != nil {
			return 0, fmt.Errorf("connect again: %w", err)
		}
		*conn = c
	}
	sql := fmt.Sprintf(loadTransaction, txn, rand.IntN(10000)-5000, rand.IntN(100000*l.scale)+1,
		rand.IntN(10*l.scale)+1, rand.IntN(l.scale)+1, rand.IntN(20000)+1, rand.IntN(30000)+1)
	if txn%occasionalEvery == 0 {
		sql += trimAuditLog + fmt.Sprintf(signUp, txn)
	}
	results, err := (*conn).PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return 0, err
	}
	var rows int64
	for _, r := range results {
		rows += r.CommandTag.RowsAffected()
	}
	return rows, nil
}

func (l *writeLoad) record(txn int64, scheduled time.Time, rows int64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rowsThrough = append(l.rowsThrough, l.rowsThrough[txn-1]+rows)
	l.txns = append(l.txns, clientTxn{Scheduled: scheduled, End: time.Now(), Failed: err != nil})
	if err != nil {
		l.failed++
		if l.failed <= maxFailuresLogged {
			l.log.Error("client transaction failed", "txn", txn, "err", err)
		}
	}
}

// committed returns how many load transactions have run and the rows they
// changed.
func (l *writeLoad) committed() (txns, rows int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.rowsThrough) - 1
	return int64(n), l.rowsThrough[n]
}

// started returns when the load last started.
func (l *writeLoad) started() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.startedAt
}

// failures returns how many load transactions failed.
func (l *writeLoad) failures() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// rowsThroughTxn returns the rows changed by load transactions 1..txn.
func (l *writeLoad) rowsThroughTxn(txn int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rowsThrough[min(max(txn, 0), int64(len(l.rowsThrough)-1))]
}

// clientTxns returns the transactions that ran at some moment between from
// and to.
func (l *writeLoad) clientTxns(from, to time.Time) []clientTxn {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []clientTxn
	for _, x := range l.txns {
		if !x.End.Before(from) && !x.Scheduled.After(to) {
			out = append(out, x)
		}
	}
	return out
}

// stop ends the load after its transaction in flight. Calling it again, or
// before start, does nothing.
func (l *writeLoad) stop() {
	if l.quit == nil {
		return
	}
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.done
}
