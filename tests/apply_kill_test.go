package tests

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// TestApplySurvivesKill9 kills the broker2pg process 20 times at random
// moments while a write load runs through pg2broker (FAULTS 4): between
// target commit and broker ack, in the middle of 3000-row transactions, in
// the middle of groups. The target's load table has no key, so a transaction
// applied twice would leave duplicate rows; both sides must end identical.
// A final SIGTERM must exit 0.
func TestApplySurvivesKill9(t *testing.T) {
	src := pgtest.Start(t, 15)
	dst := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	srcConn := pgtest.Connect(t, src, "postgres")
	dstConn := pgtest.Connect(t, dst, "postgres")
	for _, c := range []struct {
		conn *pgx.Conn
		ddl  string
	}{
		{srcConn, `CREATE TABLE load (txn int, i int, pad text, PRIMARY KEY (txn, i)); CREATE TABLE marker (n int PRIMARY KEY)`},
		{dstConn, `CREATE TABLE load (txn int, i int, pad text); CREATE TABLE marker (n int PRIMARY KEY)`},
	} {
		if _, err := c.conn.Exec(context.Background(), c.ddl); err != nil {
			t.Fatal(err)
		}
	}
	env := directionEnv(src, dst, b, "persistent://public/default/apply-kill9")
	startCapture(t, env)
	servicetest.WaitSlotActive(t, srcConn, "pgtandem_src", time.Minute)
	load := startLoad(t, src)
	const kills = 20
	for i := 0; i < kills; i++ {
		cmd := startApply(t, env)
		time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
	}
	rowsOf := load.stop(t)

	cmd := startApply(t, env)
	if _, err := srcConn.Exec(context.Background(), `INSERT INTO marker VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 3*time.Minute, "the apply catching up to the marker row", func() error {
		var done bool
		if err := dstConn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM marker)`).Scan(&done); err != nil {
			return err
		}
		if !done {
			return errNotYet
		}
		return nil
	})
	if err := eventtest.SameRows(srcConn, dstConn, "load"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("broker2pg after SIGTERM: %v", err)
	}
	t.Logf("%d kill -9 of broker2pg, %d transactions (%d rows) applied exactly once", kills, len(rowsOf), sum(rowsOf))
}

// directionEnv configures clusters src and dst, src's topic and the broker
// for the binary.
func directionEnv(src, dst *pglocal.Server, b *brokertest.Broker, topic string) []string {
	return append(os.Environ(),
		"PGTANDEM_CLUSTERS_SRC_DSN="+src.DSN("postgres"),
		"PGTANDEM_CLUSTERS_SRC_TOPIC="+topic,
		"PGTANDEM_CLUSTERS_DST_DSN="+dst.DSN("postgres"),
		"PGTANDEM_PULSAR_URL="+b.URL(),
		"PGTANDEM_PULSAR_ADMIN_URL="+b.AdminURL(),
		"PGTANDEM_LOG_LEVEL=error",
	)
}

func startApply(t *testing.T, env []string) *exec.Cmd {
	t.Helper()
	return startPgtandem(t, env, "broker2pg", "--from", "src", "--to", "dst")
}
