package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
)

// TestCaptureSurvivesKill9 kills the pg2broker process 20 times at random
// moments while a write load runs (small transactions, 3000-row ones, COPY),
// then checks that the topic holds every committed transaction exactly once,
// complete and in commit order (FAULTS 1, 2, 3). A final SIGTERM must exit 0.
func TestCaptureSurvivesKill9(t *testing.T) {
	for _, major := range []int{13, 15, 17} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			testCaptureSurvivesKill9(t, major, 20)
		})
	}
}

func testCaptureSurvivesKill9(t *testing.T, major, kills int) {
	srv := pgtest.Start(t, major)
	b := brokertest.Start(t)
	conn := pgtest.Connect(t, srv, "postgres")
	if _, err := conn.Exec(context.Background(), `CREATE TABLE load (txn int, i int, pad text, PRIMARY KEY (txn, i))`); err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("persistent://public/default/kill9-pg%d", major)
	env := append(os.Environ(),
		"PGTANDEM_CLUSTERS_SRC_DSN="+srv.DSN("postgres"),
		"PGTANDEM_CLUSTERS_SRC_TOPIC="+topic,
		"PGTANDEM_PULSAR_URL="+b.URL(),
		"PGTANDEM_LOG_LEVEL=warn",
	)

	// The first run creates publication and slot; changes committed before
	// the slot exists are not the capture's to deliver.
	first := startCapture(t, env)
	servicetest.WaitSlotActive(t, conn, "pgtandem_src", time.Minute)
	load := startLoad(t, srv)
	for i := 0; i < kills; i++ {
		cmd := first
		if i > 0 {
			cmd = startCapture(t, env)
		}
		time.Sleep(time.Duration(200+rand.IntN(1300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
	}
	rowsOf := load.stop(t)

	cmd := startCapture(t, env)
	txns := eventtest.ReadTxns(t, b.URL(), topic, len(rowsOf), 3*time.Minute)
	eventtest.CheckLoad(t, txns, "load", rowsOf)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pg2broker after SIGTERM: %v", err)
	}
	t.Logf("PostgreSQL %d: %d kill -9, %d transactions (%d rows) all in the topic once", major, kills, len(rowsOf), sum(rowsOf))
}

// startPgtandem starts the pgtandem binary with args and env; the test's end
// kills it if it still runs.
func startPgtandem(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(pgtandemBin, args...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func startCapture(t *testing.T, env []string) *exec.Cmd {
	t.Helper()
	return startPgtandem(t, env, "pg2broker", "--from", "src", "--create-slot")
}

// load commits numbered transactions into table load from one connection, so
// that commit order is number order, and records those that committed.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	rowsOf map[int]int
	err    error
}

func startLoad(t *testing.T, srv *pglocal.Server) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, rowsOf: map[int]int{}}
	conn, err := pgx.Connect(context.Background(), srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer conn.Close(context.Background())
		for n := 1; ctx.Err() == nil; n++ {
			rows, err := writeLoadTxn(conn, n)
			l.mu.Lock()
			if err == nil {
				l.rowsOf[n] = rows
			} else if l.err == nil {
				l.err = fmt.Errorf("load transaction %d: %w", n, err)
			}
			l.mu.Unlock()
			if err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return l
}

// writeLoadTxn varies the shape: mostly small, every 25th a 3000-row
// transaction (kill in the middle of a large one), every 10th by COPY (rows
// sharing one LSN).
func writeLoadTxn(conn *pgx.Conn, n int) (int, error) {
	ctx := context.Background()
	switch {
	case n%25 == 0:
		_, err := conn.Exec(ctx, `INSERT INTO load SELECT $1, g, repeat('x', 100) FROM generate_series(1, 3000) g`, n)
		return 3000, err
	case n%10 == 0:
		rows := 50
		_, err := conn.CopyFrom(ctx, pgx.Identifier{"load"}, []string{"txn", "i", "pad"},
			pgx.CopyFromSlice(rows, func(i int) ([]any, error) { return []any{n, i + 1, "copy"}, nil }))
		return rows, err
	default:
		rows := 1 + n%5
		_, err := conn.Exec(ctx, `INSERT INTO load SELECT $1, g, 'small' FROM generate_series(1, $2) g`, n, rows)
		return rows, err
	}
}

// committed counts the transactions the load committed so far.
func (l *load) committed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.rowsOf)
}

func (l *load) stop(t *testing.T) map[int]int {
	t.Helper()
	l.cancel()
	l.wg.Wait()
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.rowsOf
}

func sum(m map[int]int) int {
	total := 0
	for _, v := range m {
		total += v
	}
	return total
}
