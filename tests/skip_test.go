package tests

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// TestApplySkipCommand runs pg2broker and broker2pg binaries over a target
// that lost rows the source then updates, and deletes: each time the apply
// blocks, and `pgtandem status` names the table, the old key, the commit
// LSN, the change and its message; a marker committed after it stays
// unapplied while the apply retries; `pgtandem apply skip` refuses any
// other change, and for that change lets the apply pass over exactly it,
// which pgtandem.apply_skips records.
func TestApplySkipCommand(t *testing.T) {
	src := pgtest.Start(t, 15)
	dst := pgtest.Start(t, 17)
	b := brokertest.Start(t)
	srcConn := pgtest.Connect(t, src, "postgres")
	dstConn := pgtest.Connect(t, dst, "postgres")
	ctx := context.Background()
	for _, conn := range []*pgx.Conn{srcConn, dstConn} {
		if _, err := conn.Exec(ctx, `CREATE TABLE marker (n int PRIMARY KEY); CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 6) g`); err != nil {
			t.Fatal(err)
		}
	}
	topic := "persistent://public/default/skip"
	env := directionEnv(src, dst, b, topic)
	startCapture(t, env)
	servicetest.WaitSlotActive(t, srcConn, "pgtandem_src", time.Minute)
	startApply(t, env)
	sqlExec(t, srcConn, `INSERT INTO marker VALUES (1)`)
	waitMarkerRow(t, dstConn, 1)

	for _, c := range []struct {
		name, drift, change string
		kind                event.Kind
		id                  string
		marker              int
	}{
		{"update", `DELETE FROM items WHERE id = 2`, `UPDATE items SET v = 'x' WHERE id <= 3`, event.KindUpdate, "2", 2},
		{"delete", `DELETE FROM items WHERE id = 5`, `DELETE FROM items WHERE id >= 4`, event.KindDelete, "5", 3},
	} {
		sqlExec(t, dstConn, c.drift)
		sqlExec(t, srcConn, c.change)
		sqlExec(t, srcConn, `INSERT INTO marker VALUES ($1)`, c.marker)
		lsn, change, msgID := changeInTopic(t, b.URL(), topic, c.kind, "items", "id", c.id)
		want := []string{`"public"."items"`, fmt.Sprintf(`the %s of "public"."items" ("id")=('%s')`, c.kind, c.id),
			fmt.Sprintf("source lsn %s change %d", lsn, change), "message " + msgID, "matches no row on the target",
			fmt.Sprintf("pgtandem apply skip --from src --to dst --lsn %s --change %d", lsn, change)}
		waitStatus(t, env, "blocked at the "+c.name+" of items "+c.id, func(s statusJSON) bool {
			return len(s.Directions) == 1 && containsAll(s.Directions[0].Blocked, want)
		})
		servicetest.WaitHandedOverTwice(t, b.AdminURL(), topic, catalog.SubscriptionName("dst"))
		if markerApplied(t, dstConn, c.marker) {
			t.Fatalf("%s: marker %d behind the blocked change applied", c.name, c.marker)
		}

		skip := func(change int) (int, string) {
			cmd := exec.Command(pgtandemBin, "apply", "skip", "--from", "src", "--to", "dst", "--lsn", lsn.String(), "--change", strconv.Itoa(change))
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), string(out)
			} else if err != nil {
				t.Fatal(err)
			}
			return 0, string(out)
		}
		if code, out := skip(change + 1); code != 1 || !strings.Contains(out, fmt.Sprintf("the apply is blocked at change %d of source lsn %s", change, lsn)) {
			t.Fatalf("%s: skip of another change: exit %d\n%s", c.name, code, out)
		}
		if code, out := skip(change); code != 0 || !strings.Contains(out, "recorded") {
			t.Fatalf("%s: skip: exit %d\n%s", c.name, code, out)
		}
		waitMarkerRow(t, dstConn, c.marker)
		waitStatus(t, env, "caught up after the skip", func(s statusJSON) bool {
			d := s.Directions[0]
			return d.Blocked == "" && d.Backlog != nil && *d.Backlog == 0 && d.LagSeconds != nil && *d.LagSeconds == 0
		})
		var skippedAt *time.Time
		var recordedID *string
		if err := dstConn.QueryRow(ctx, `SELECT skipped_at, message_id FROM pgtandem.apply_skips WHERE commit_lsn = $1::pg_lsn AND change = $2`, lsn.String(), change).
			Scan(&skippedAt, &recordedID); err != nil || skippedAt == nil || recordedID == nil || *recordedID != msgID {
			t.Fatalf("%s: apply_skips: skipped_at %v, message %v, %v; want set and %s", c.name, skippedAt, recordedID, err, msgID)
		}
	}
	// The target lacks what it lost, and has every other change.
	var got string
	if err := dstConn.QueryRow(ctx, `SELECT string_agg(id || ':' || v, ' ' ORDER BY id) FROM items`).Scan(&got); err != nil || got != "1:x 3:x" {
		t.Fatalf("items on the target: %q, %v; want 1:x 3:x", got, err)
	}
}

func sqlExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func markerApplied(t *testing.T, conn *pgx.Conn, n int) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM marker WHERE n = $1)`, n).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func waitMarkerRow(t *testing.T, conn *pgx.Conn, n int) {
	t.Helper()
	testwait.For(t, 2*time.Minute, fmt.Sprintf("marker %d applied", n), func() error {
		if !markerApplied(t, conn, n) {
			return errNotYet
		}
		return nil
	})
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// changeInTopic reads topic from its start until the change of kind to
// table whose row has column = value, and returns its transaction's commit
// LSN, its position in it and its message id.
func changeInTopic(t *testing.T, url, topic string, kind event.Kind, table, column, value string) (event.LSN, int, string) {
	t.Helper()
	return servicetest.ChangeInTopic(t, url, topic, fmt.Sprintf("%s of %s %s = %s", kind, table, column, value), func(ev *event.Event) bool {
		row := ev.New
		if kind == event.KindDelete {
			row = ev.Old
		}
		v := row[column]
		return ev.Kind == kind && ev.Table == table && v != nil && *v == value
	})
}
