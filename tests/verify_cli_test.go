package tests

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
)

// TestVerifyExitCodes runs `pgtandem verify` as scripts do: exit 0 when
// equal, 1 naming table and key when a row differs, 2 when it cannot compare.
func TestVerifyExitCodes(t *testing.T) {
	src, dst := pgtest.Start(t, 15), pgtest.Start(t, 17)
	ctx := context.Background()
	for _, srv := range []*pglocal.Server{src, dst} {
		conn := pgtest.Connect(t, srv, "postgres")
		if _, err := conn.Exec(ctx, `CREATE TABLE "Orders" (id int PRIMARY KEY, v text); INSERT INTO "Orders" SELECT g, 'v' || g FROM generate_series(1, 1000) g`); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(env []string, args ...string) (int, string) {
		cmd := exec.Command(pgtandemBin, append([]string{"verify", "--from", "old", "--to", "new"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	env := []string{"PGTANDEM_CLUSTERS_OLD_DSN=" + src.DSN("postgres"), "PGTANDEM_CLUSTERS_NEW_DSN=" + dst.DSN("postgres")}
	if code, out := verify(env); code != 0 || !strings.Contains(out, "EQUAL") {
		t.Fatalf("equal databases: exit %d\n%s", code, out)
	}
	if _, err := pgtest.Connect(t, dst, "postgres").Exec(ctx, `UPDATE "Orders" SET v = 'x' WHERE id = 777`); err != nil {
		t.Fatal(err)
	}
	code, out := verify(env)
	if code != 1 || !strings.Contains(out, "public.Orders: key (777): different") {
		t.Fatalf("changed row: exit %d\n%s", code, out)
	}
	code, out = verify(env, "--json")
	var report struct {
		Equal  bool `json:"equal"`
		Tables []struct {
			Table    string `json:"table"`
			DiffRows int    `json:"differing_rows"`
		} `json:"tables"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{\n"):strings.LastIndex(out, "}")+1]), &report); code != 1 || err != nil || report.Equal || report.Tables[0].DiffRows != 1 {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	bad := []string{"PGTANDEM_CLUSTERS_OLD_DSN=" + src.DSN("postgres"), "PGTANDEM_CLUSTERS_NEW_DSN=postgres://nobody@127.0.0.1:1/x?connect_timeout=2"}
	if code, out := verify(bad); code != 2 {
		t.Fatalf("unreachable target: exit %d\n%s", code, out)
	}
}
