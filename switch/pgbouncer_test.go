package switchover_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pgbouncertest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// db is the database every test reaches through the bouncer, under the
// same name as on the server.
const db = "postgres"

func startBouncer(t *testing.T, major int) (*pgbouncertest.Bouncer, *switchover.PgBouncer) {
	t.Helper()
	bouncer := pgbouncertest.Start(t, pgtest.Start(t, major), db)
	admin, err := switchover.NewPgBouncer(bouncer.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	return bouncer, admin
}

func poolOf(admin *switchover.PgBouncer, name string) (switchover.Pool, error) {
	pools, err := admin.Pools(context.Background())
	if err != nil {
		return switchover.Pool{}, err
	}
	for _, p := range pools {
		if p.Database == name {
			return p, nil
		}
	}
	return switchover.Pool{}, fmt.Errorf("SHOW POOLS has no pool of %s: %+v", name, pools)
}

func databaseOf(t *testing.T, admin *switchover.PgBouncer, name string) switchover.Database {
	t.Helper()
	d, err := admin.Database(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil {
		t.Fatalf("SHOW DATABASES has no %s", name)
	}
	return *d
}

// outcome is what a call running in a goroutine returned, and when.
type outcome struct {
	err error
	at  time.Time
}

func await(t *testing.T, what string, ch <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer within 30 s", what)
		return outcome{}
	}
}

func TestPauseWaitsForRunningTransaction(t *testing.T) {
	ctx := context.Background()
	bouncer, admin := startBouncer(t, 15)
	inTx, waiter := bouncer.Connect(t, db), bouncer.Connect(t, db)
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE paused (id int)"); err != nil {
		t.Fatal(err)
	}

	paused := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := admin.Pause(ctx, db)
		paused <- outcome{err, time.Now()}
	}()
	testwait.For(t, 10*time.Second, "PAUSE issued", func() error {
		if !databaseOf(t, admin, db).Paused {
			return errors.New("not paused yet")
		}
		return nil
	})
	queried := make(chan outcome, 1)
	go func() {
		var n int
		err := waiter.QueryRow(ctx, "SELECT count(*) FROM paused").Scan(&n)
		queried <- outcome{err, time.Now()}
	}()
	// Long enough for a PAUSE that does not wait for the transaction to
	// have returned.
	const held = 300 * time.Millisecond
	testwait.For(t, 10*time.Second, "the second client's query queued for "+held.String(), func() error {
		p, err := poolOf(admin, db)
		if err == nil && (p.ClientsWaiting != 1 || p.MaxWait < held) {
			err = fmt.Errorf("%d clients waiting, the longest for %s", p.ClientsWaiting, p.MaxWait)
		}
		return err
	})
	select {
	case p := <-paused:
		t.Fatalf("PAUSE returned while a transaction runs: %v", p.err)
	default:
	}

	committed := time.Now()
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit while PAUSE waits: %v", err)
	}
	p := await(t, "PAUSE", paused)
	if p.err != nil {
		t.Fatalf("PAUSE: %v", p.err)
	}
	if p.at.Before(committed) {
		t.Fatalf("PAUSE returned at %s, before the transaction committed at %s", p.at.Format(time.StampMicro), committed.Format(time.StampMicro))
	}
	pool, err := poolOf(admin, db)
	if err != nil {
		t.Fatal(err)
	}
	if pool.ClientsWaiting != 1 || pool.ServersActive+pool.ServersIdle+pool.ServersUsed != 0 {
		t.Fatalf("paused: want the query still waiting and no server connection, SHOW POOLS: %+v", pool)
	}

	resumed := time.Now()
	if err := admin.Resume(ctx, db); err != nil {
		t.Fatal(err)
	}
	q := await(t, "the queued query", queried)
	if q.err != nil {
		t.Fatalf("the query queued during PAUSE failed: %v", q.err)
	}
	if q.at.Before(resumed) {
		t.Fatalf("the queued query returned at %s, before RESUME at %s", q.at.Format(time.StampMicro), resumed.Format(time.StampMicro))
	}
}

func TestPauseTimeoutResumes(t *testing.T) {
	ctx := context.Background()
	bouncer, admin := startBouncer(t, 15)
	idle := bouncer.Connect(t, db)
	tx, err := idle.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	// The margin covers the undo (close, RESUME, two SHOWs on local
	// connections) on a loaded 2-core CI machine; what is tested is that
	// PAUSE gives up at the deadline instead of waiting for the client.
	const deadline, margin = 500 * time.Millisecond, 5 * time.Second
	pauseCtx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	err = admin.Pause(pauseCtx, db)
	took := time.Since(start)
	var timeout *switchover.PauseTimeoutError
	if !errors.As(err, &timeout) {
		t.Fatalf("PAUSE with a client idle in transaction: want a *PauseTimeoutError, got %v", err)
	}
	t.Logf("after %s: %v", took, err)
	if took > deadline+margin {
		t.Errorf("PAUSE gave up after %s, want at most %s", took, deadline+margin)
	}
	if !errors.Is(err, context.DeadlineExceeded) || timeout.Database != db || timeout.ServersActive != 1 || timeout.ResumeErr != nil {
		t.Errorf("want database %s, 1 active server, no resume error and context.DeadlineExceeded, got %+v", db, timeout)
	}
	if databaseOf(t, admin, db).Paused {
		t.Fatal("the database is still paused after PAUSE gave up")
	}

	queryCtx, cancelQuery := context.WithTimeout(ctx, 5*time.Second)
	defer cancelQuery()
	var one int
	if err := bouncer.Connect(t, db).QueryRow(queryCtx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("a new client after PAUSE gave up: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the client idle in transaction cannot commit: %v", err)
	}
	// A console connection left waiting by the abandoned PAUSE would
	// answer this one's completion too early or not at all (#715).
	pauseCtx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := admin.Pause(pauseCtx, db); err != nil {
		t.Fatalf("PAUSE once the transaction ended: %v", err)
	}
	if err := admin.Resume(ctx, db); err != nil {
		t.Fatal(err)
	}
}

// versionLog collects what a client looping through the bouncer saw.
type versionLog struct {
	mu       sync.Mutex
	versions []int
	errs     []error
}

func (l *versionLog) add(v int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs = append(l.errs, err)
		return
	}
	l.versions = append(l.versions, v)
}

// count returns how many answers came from servers of major.
func (l *versionLog) count(major int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.countLocked(major)
}

// check fails the test on any error, and on an answer of from after one of
// to: every transaction after the switch must land on the new server.
func (l *versionLog) check(t *testing.T, client string, from, to int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		t.Errorf("%s: %v", client, err)
	}
	switched := false
	for i, v := range l.versions {
		switch major := v / 10000; {
		case major == to:
			switched = true
		case major != from || switched:
			t.Fatalf("%s: answer %d came from %d after the switch: %v", client, i, v, l.versions)
		}
	}
	t.Logf("%s: %d answers from %d, then %d from %d", client, l.countLocked(from), from, l.countLocked(to), to)
}

func (l *versionLog) countLocked(major int) int {
	n := 0
	for _, v := range l.versions {
		if v/10000 == major {
			n++
		}
	}
	return n
}

const versionQuery = "SELECT current_setting('server_version_num')::int"

func TestRedirectUnderLoad(t *testing.T) {
	ctx := context.Background()
	oldServer, newServer := pgtest.Start(t, 15), pgtest.Start(t, 17)
	bouncer := pgbouncertest.Start(t, oldServer, db)
	admin, err := switchover.NewPgBouncer(bouncer.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}

	// One client keeps its connection, one connects anew for every
	// transaction: PAUSE and RELOAD must fail neither.
	held := bouncer.Connect(t, db)
	clientConfig, err := pgx.ParseConfig(bouncer.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	clientConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	clients := map[string]func(context.Context) (int, error){
		"held connection": func(ctx context.Context) (v int, err error) {
			return v, held.QueryRow(ctx, versionQuery).Scan(&v)
		},
		"new connection per transaction": func(ctx context.Context) (v int, err error) {
			conn, err := pgx.ConnectConfig(ctx, clientConfig)
			if err != nil {
				return 0, err
			}
			defer conn.Close(context.Background())
			return v, conn.QueryRow(ctx, versionQuery).Scan(&v)
		},
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	logs := map[string]*versionLog{}
	for name, query := range clients {
		l := &versionLog{}
		logs[name] = l
		load.Add(1)
		go func() {
			defer load.Done()
			for loadCtx.Err() == nil {
				v, err := query(loadCtx)
				if loadCtx.Err() != nil {
					return
				}
				l.add(v, err)
			}
		}()
	}
	defer func() { stopLoad(); load.Wait() }()
	for name, l := range logs {
		testwait.For(t, 10*time.Second, name+" answered by 15", func() error {
			if n := l.count(15); n < 3 {
				return fmt.Errorf("%d answers", n)
			}
			return nil
		})
	}

	pauseCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := admin.Pause(pauseCtx, db); err != nil {
		t.Fatal(err)
	}
	// Both clients queued: none logs in between RELOAD and RESUME, which
	// would stall the pool for server_login_retry (see Redirect).
	testwait.For(t, 10*time.Second, "both clients queued behind PAUSE", func() error {
		p, err := poolOf(admin, db)
		if err == nil && p.ClientsWaiting != len(clients) {
			err = fmt.Errorf("%d clients waiting", p.ClientsWaiting)
		}
		return err
	})
	target := switchover.DatabaseEntry{Host: "127.0.0.1", Port: newServer.Port, DBName: db}
	if err := admin.Redirect(ctx, bouncer.DatabasesFile(), db, target); err != nil {
		t.Fatal(err)
	}
	if err := admin.Resume(ctx, db); err != nil {
		t.Fatal(err)
	}
	t.Logf("paused for %s", time.Since(start))

	var v int
	if err := bouncer.Connect(t, db).QueryRow(ctx, versionQuery).Scan(&v); err != nil || v/10000 != 17 {
		t.Fatalf("first transaction after RESUME: version %d, %v; want 17", v, err)
	}
	for name, l := range logs {
		testwait.For(t, 10*time.Second, name+" answered by 17", func() error {
			if n := l.count(17); n < 3 {
				return fmt.Errorf("%d answers", n)
			}
			return nil
		})
	}
	stopLoad()
	load.Wait()
	for name, l := range logs {
		l.check(t, name, 15, 17)
	}
}

// pauseWithQueryWaiting pauses db and sends a query from a client of its
// own, which waits; it returns once SHOW POOLS shows it waiting, with the
// channel the query's outcome arrives on.
func pauseWithQueryWaiting(t *testing.T, bouncer *pgbouncertest.Bouncer, admin *switchover.PgBouncer) <-chan outcome {
	t.Helper()
	ctx := context.Background()
	waiter := bouncer.Connect(t, db)
	if err := admin.Pause(ctx, db); err != nil {
		t.Fatal(err)
	}
	queried := make(chan outcome, 1)
	go func() {
		_, err := waiter.Exec(ctx, "SELECT 1")
		queried <- outcome{err, time.Now()}
	}()
	testwait.For(t, 10*time.Second, "a waiting client and its wait", func() error {
		p, err := poolOf(admin, db)
		if err == nil && (p.ClientsWaiting != 1 || p.MaxWait <= 0) {
			err = fmt.Errorf("%+v", p)
		}
		return err
	})
	return queried
}

func TestPools(t *testing.T) {
	ctx := context.Background()
	bouncer, admin := startBouncer(t, 15)
	tx, err := bouncer.Connect(t, db).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	pools, err := admin.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var app, console *switchover.Pool
	for i := range pools {
		switch pools[i].Database {
		case db:
			app = &pools[i]
		case "pgbouncer":
			console = &pools[i]
		}
	}
	want := switchover.Pool{Database: db, User: "postgres", ClientsActive: 1, ServersActive: 1, Mode: "transaction"}
	if app == nil || *app != want {
		t.Fatalf("pool of %s with a transaction open: want %+v, SHOW POOLS: %+v", db, want, pools)
	}
	if console == nil || console.Mode != "statement" {
		t.Fatalf("want the console's pool in statement mode, SHOW POOLS: %+v", pools)
	}

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "server connection released", func() error {
		p, err := poolOf(admin, db)
		if err == nil && (p.ServersActive != 0 || p.ServersIdle != 1) {
			err = fmt.Errorf("%+v", p)
		}
		return err
	})

	queried := pauseWithQueryWaiting(t, bouncer, admin)
	if err := admin.Resume(ctx, db); err != nil {
		t.Fatal(err)
	}
	if q := await(t, "the waiting query", queried); q.err != nil {
		t.Fatal(q.err)
	}
}

// TestWaitNoClientWaiting: while a paused database holds a client's query,
// the wait gives up with what is waiting; after the RESUME it returns once
// the query got its server connection.
func TestWaitNoClientWaiting(t *testing.T) {
	ctx := context.Background()
	bouncer, admin := startBouncer(t, 15)
	queried := pauseWithQueryWaiting(t, bouncer, admin)

	waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err := admin.WaitNoClientWaiting(waitCtx, db, 5*time.Millisecond)
	var waiting *switchover.ClientsWaitingError
	if !errors.As(err, &waiting) || waiting.Waiting != 1 || waiting.Database != db || waiting.MaxWait <= 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("paused with a query queued: want a *ClientsWaitingError with 1 client of %s, its wait, and the deadline; got %v", db, err)
	}

	if err := admin.Resume(ctx, db); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := admin.WaitNoClientWaiting(waitCtx, db, 5*time.Millisecond); err != nil {
		t.Fatalf("after RESUME: %v", err)
	}
	q := await(t, "the queued query", queried)
	if q.err != nil {
		t.Fatalf("the query queued during PAUSE failed: %v", q.err)
	}
}
