package tests

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
)

// TestStatusLag reads the lag of a direction through `pgtandem status`:
// while the apply is blocked it is the age of the transaction held back,
// growing; once the target is fixed and everything is applied, the idle,
// caught-up pipeline shows 0, not how long the last transaction took.
func TestStatusLag(t *testing.T) {
	src := pgtest.Start(t, 15)
	dst := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	srcConn := pgtest.Connect(t, src, "postgres")
	dstConn := pgtest.Connect(t, dst, "postgres")
	sqlExec(t, srcConn, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE wide (id int PRIMARY KEY, extra text)`)
	sqlExec(t, dstConn, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE wide (id int PRIMARY KEY)`)
	env := directionEnv(src, dst, b, "persistent://public/default/status-lag")
	startCapture(t, env)
	servicetest.WaitSlotActive(t, srcConn, "pgtandem_src", time.Minute)
	startApply(t, env)
	sqlExec(t, srcConn, `INSERT INTO marker VALUES (1)`)
	waitMarkerRow(t, dstConn, 1)

	before := time.Now()
	sqlExec(t, srcConn, `INSERT INTO wide VALUES (1, 'needs the column')`)
	st := waitStatus(t, env, "blocked for 3 seconds", func(s statusJSON) bool {
		d := s.Directions[0]
		return strings.Contains(d.Blocked, `"public"."wide" column "extra"`) && d.LagSeconds != nil && *d.LagSeconds >= 3
	})
	if lag, age := *st.Directions[0].LagSeconds, time.Since(before).Seconds(); lag > age {
		t.Fatalf("lag %.3f s while blocked, but the blocked transaction is only %.3f s old", lag, age)
	}

	sqlExec(t, dstConn, `ALTER TABLE wide ADD COLUMN extra text`)
	waitStatus(t, env, "caught up and idle with lag 0", func(s statusJSON) bool {
		d := s.Directions[0]
		return d.Blocked == "" && d.Backlog != nil && *d.Backlog == 0 && d.LagSeconds != nil && *d.LagSeconds == 0
	})
	cmd := exec.Command(pgtandemBin, "status")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0.000 ") {
		t.Fatalf("status table of a caught-up pipeline: %v\n%s", err, out)
	}
}
