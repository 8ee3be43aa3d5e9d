package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

type statusJSON struct {
	Clusters []struct {
		Cluster, Slot, Error string
		ConfirmedLSN         string `json:"confirmed_lsn"`
		LagBytes             *int64 `json:"lag_bytes"`
	}
	Directions []struct {
		From, To   string
		AppliedLSN string   `json:"applied_lsn"`
		LagSeconds *float64 `json:"lag_seconds"`
		Backlog    *int64
		Blocked    string
	}
}

// TestStatusShowsProgressAndBlocked runs pg2broker and broker2pg binaries and
// reads `pgtandem status --json` and the table: slot positions, the applied
// LSN and backlog of the direction, then the reason of a blocked apply.
func TestStatusShowsProgressAndBlocked(t *testing.T) {
	src := pgtest.Start(t, 15)
	dst := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	srcConn := pgtest.Connect(t, src, "postgres")
	dstConn := pgtest.Connect(t, dst, "postgres")
	ctx := context.Background()
	if _, err := srcConn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE only_src (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := dstConn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	env := directionEnv(src, dst, b, "persistent://public/default/status")
	startCapture(t, env)
	servicetest.WaitSlotActive(t, srcConn, "pgtandem_src", time.Minute)
	startApply(t, env)
	if _, err := srcConn.Exec(ctx, `INSERT INTO t SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, env, "applied and acknowledged", func(s statusJSON) bool {
		return len(s.Directions) == 1 && s.Directions[0].AppliedLSN != "0/0" && s.Directions[0].Backlog != nil && *s.Directions[0].Backlog == 0
	})
	d := st.Directions[0]
	if d.From != "src" || d.To != "dst" || d.LagSeconds == nil || d.Blocked != "" {
		t.Fatalf("direction: %+v", d)
	}
	if len(st.Clusters) != 2 || st.Clusters[1].ConfirmedLSN == "" || st.Clusters[1].LagBytes == nil {
		t.Fatalf("clusters: %+v", st.Clusters)
	}

	if _, err := srcConn.Exec(ctx, `INSERT INTO only_src VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, env, "blocked", func(s statusJSON) bool {
		return len(s.Directions) == 1 && strings.Contains(s.Directions[0].Blocked, `"public"."only_src"`)
	})
	cmd := exec.Command(pgtandemBin, "status")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "APPLIED LSN") || !strings.Contains(string(out), `"only_src"`) {
		t.Fatalf("status table: %v\n%s", err, out)
	}
	t.Logf("pgtandem status:\n%s", out)
}

func waitStatus(t *testing.T, env []string, what string, ok func(statusJSON) bool) statusJSON {
	t.Helper()
	var st statusJSON
	testwait.For(t, time.Minute, "status showing "+what, func() error {
		cmd := exec.Command(pgtandemBin, "status", "--json")
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		st = statusJSON{}
		if err := json.Unmarshal(out, &st); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		if !ok(st) {
			return fmt.Errorf("%w: %s", errNotYet, out)
		}
		return nil
	})
	return st
}
