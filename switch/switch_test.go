package switchover_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/tandemtest"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// clientLoad runs transactions through PgBouncer until stopped and counts
// the ones that failed.
type clientLoad struct {
	done, failed atomic.Int64
	lastErr      atomic.Value
	stop         func()
}

func startLoad(t *testing.T, dsn string, clients int) *clientLoad {
	t.Helper()
	l := &clientLoad{}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{}, clients)
	for c := 0; c < clients; c++ {
		conn, err := pgx.Connect(context.Background(), dsn+"&default_query_exec_mode=simple_protocol")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer func() { finished <- struct{}{} }()
			defer conn.Close(context.Background())
			for i := 0; ctx.Err() == nil; i++ {
				_, err := conn.Exec(ctx, `BEGIN; UPDATE acct SET balance = balance + 1 WHERE id = `+itoa(1+i%tandemtest.Accounts)+`;
					INSERT INTO ev_big (aid) VALUES (1); INSERT INTO ev_ident (aid) VALUES (1); SELECT nextval('standalone_seq'); COMMIT`)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					l.failed.Add(1)
					l.lastErr.Store(err.Error())
					continue
				}
				l.done.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			cancel()
			for c := 0; c < clients; c++ {
				<-finished
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func itoa(i int) string {
	return string(rune('0'+i/1000%10)) + string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

func TestSwitchAndRollback(t *testing.T) {
	td := tandemtest.Start(t, 15, 17)
	load := startLoad(t, td.Bouncer.DSN(tandemtest.Database), 4)
	ctx := context.Background()
	for _, from := range []string{"old", "new"} {
		before := load.done.Load()
		for load.done.Load() < before+200 {
			time.Sleep(10 * time.Millisecond)
		}
		rep, err := switchover.Run(ctx, td.SwitchConfig(from), switchover.Options{}, servicetest.Logger())
		if err != nil {
			t.Fatalf("switch from %s: %v", from, err)
		}
		t.Logf("switch from %s: pause %s, steps %+v", from, rep.Pause, rep.Steps)
	}
	load.stop()
	if n := load.failed.Load(); n > 0 {
		t.Fatalf("%d client transactions failed, last: %v", n, load.lastErr.Load())
	}
	_ = errors.New
}
