package pgbouncertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtandem/pgtandem/internal/pgtest"
)

func TestStartAndStop(t *testing.T) {
	server := pgtest.Start(t, 15)
	var b *Bouncer
	t.Run("running", func(t *testing.T) {
		ctx := context.Background()
		b = Start(t, server, "postgres")
		var version int
		if err := b.Connect(t, "postgres").QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil || version/10000 != 15 {
			t.Fatalf("query through the bouncer: %d, %v", version, err)
		}
		admin, err := pgconn.Connect(ctx, b.AdminDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(ctx)
		results, err := admin.Exec(ctx, "SHOW DATABASES").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var rows []string
		for _, row := range results[0].Rows {
			rows = append(rows, string(bytes.Join(row, []byte(" "))))
		}
		if want := fmt.Sprintf("postgres 127.0.0.1 %d postgres", server.Port); !strings.Contains(strings.Join(rows, "\n"), want) {
			t.Fatalf("SHOW DATABASES does not show %q, the entry of %s: %q", want, b.DatabasesFile(), rows)
		}
		if os.Geteuid() == 0 {
			st, err := os.Stat("/proc/" + fmt.Sprint(b.Pid()))
			if err != nil {
				t.Fatal(err)
			}
			if uid := st.Sys().(*syscall.Stat_t).Uid; uid == 0 {
				t.Fatal("PgBouncer runs as root")
			}
		}
	})
	if b.Running() {
		t.Fatal("PgBouncer still runs after its test ended")
	}
	if _, err := os.Stat(b.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left behind: %v", b.Dir, err)
	}
}
