package bootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
)

// resumeSchema adds to schema what makes an interrupted copy observable.
// The copy runs largest table first (by size on disk): accounts and
// shard_big are copied quickly, then slow_a and slow_b keep both jobs busy
// for a while, as their 1 MB values are small on disk but not in COPY;
// shard_small, journal and the rest come last. shard's partitions are one
// unit (changes name the root), so shard_big is copied again with
// shard_small.
const resumeSchema = `
CREATE TABLE slow_a (id int PRIMARY KEY, blob text);
CREATE TABLE slow_b (id int PRIMARY KEY, blob text);
INSERT INTO slow_a SELECT g, repeat(chr(64 + g % 26), 1000000) FROM generate_series(1, 80) g;
INSERT INTO slow_b SELECT g, repeat(chr(64 + g % 26), 1000000) FROM generate_series(1, 80) g;
CREATE TABLE shard (id int, big bool, pad text, PRIMARY KEY (id, big)) PARTITION BY LIST (big);
CREATE TABLE shard_big PARTITION OF shard FOR VALUES IN (true);
CREATE TABLE shard_small PARTITION OF shard FOR VALUES IN (false);
INSERT INTO shard SELECT g, true, md5(g::text) || md5((-g)::text) FROM generate_series(1, 12000) g;
INSERT INTO shard SELECT g, false, 'small' FROM generate_series(20001, 20050) g;
ANALYZE;
`

// TestResumeInterruptedCopy stops an init in the middle of its copy while a
// write load runs, runs it again, and requires that it keeps the finished
// tables (not copied again: same rows, same xmin), copies the others in a
// new snapshot, and that streaming from the handoff then makes source and
// target equal. The load changes journal (no key, duplicate rows) between
// the two snapshots, which only the per-table handoff keeps from being
// applied twice.
func TestResumeInterruptedCopy(t *testing.T) {
	ctx := context.Background()
	src, dst := pgtest.Start(t, 15), pgtest.Start(t, 17)
	b := brokertest.Start(t)
	srcConn, dstConn := pgtest.Connect(t, src, "postgres"), pgtest.Connect(t, dst, "postgres")
	if _, err := srcConn.Exec(ctx, schema+resumeSchema); err != nil {
		t.Fatal(err)
	}
	topic := "persistent://public/default/init-resume"
	stopLoad := load(t, src)
	stopShardLoad := shardLoad(t, src)
	cfg := bootstrap.Config{Source: "old", Target: "new", SourceDSN: src.DSN("postgres"), TargetDSN: dst.DSN("postgres"), Topic: topic, Jobs: 2, SplitRows: 5000}

	// Stopped once accounts and shard_big are committed and the slow tables
	// are being copied.
	copyCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var atStop bootstrap.CopyProgress
	cfg.Progress = func(p bootstrap.CopyProgress) {
		done := map[string]bool{}
		for _, tp := range p.Tables {
			done[tp.Table] = tp.Done
		}
		if done["public.accounts"] && done["public.shard_big"] && !done["public.slow_a"] && !done["public.journal"] {
			once.Do(func() { atStop = p; cancel() })
		}
	}
	_, err := bootstrap.Copy(copyCtx, cfg, servicetest.Logger())
	var ie *bootstrap.InterruptedError
	if !errors.As(err, &ie) {
		t.Fatalf("interrupted copy returned %v, want an InterruptedError (state at the last progress: %+v)", err, atStop)
	}
	for _, want := range []string{"slot pgtandem_old is kept", "holds WAL", "pgtandem init --from old --to new", "pg_drop_replication_slot('pgtandem_old')"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	var slotKept bool
	if err := srcConn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgtandem_old')`).Scan(&slotKept); err != nil || !slotKept {
		t.Fatalf("slot not kept after the interruption (%v)", err)
	}
	if got := copiedTables(t, dstConn); !slices.Equal(got, []string{"accounts", "shard_big"}) {
		t.Fatalf("tables recorded as copied after the interruption: %v, want accounts and shard_big", got)
	}
	accountsBefore := xminSum(t, dstConn, "accounts")

	waitLoadCommit(t, src) // changes between the two snapshots
	cfg.Progress = nil
	res, err := bootstrap.Copy(ctx, cfg, servicetest.Logger())
	if err != nil {
		t.Fatalf("resumed init: %v", err)
	}
	var kept, copied []string
	for _, tc := range res.Tables {
		if tc.Kept {
			kept = append(kept, tc.Table)
		} else {
			copied = append(copied, tc.Table)
		}
	}
	slices.Sort(copied)
	if !res.Resumed || !slices.Equal(kept, []string{"public.accounts"}) || !slices.Contains(copied, "public.shard_big") || !slices.Contains(copied, "public.journal") || slices.Contains(copied, "public.accounts") {
		t.Fatalf("resumed init kept %v and copied %v (resumed %v); want accounts kept, the rest (shard_big too) copied", kept, copied, res.Resumed)
	}
	if after := xminSum(t, dstConn, "accounts"); after != accountsBefore {
		t.Fatalf("accounts was copied again: its rows' xmin changed from %s to %s", accountsBefore, after)
	}
	var handoffs []string
	rows, _ := dstConn.Query(ctx, `SELECT table_name FROM pgtandem.table_handoff WHERE source_cluster = 'old' AND after_lsn >= $1 ORDER BY 1`, res.HandoffLSN)
	handoffs, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Contains(handoffs, "shard") || !slices.Contains(handoffs, "journal") || slices.Contains(handoffs, "accounts") || slices.Contains(handoffs, "shard_big") {
		t.Fatalf("per-table handoffs %v (%v): want shard (by its root) and journal, not accounts", handoffs, err)
	}

	again, err := bootstrap.Copy(ctx, cfg, servicetest.Logger())
	if err != nil || !again.AlreadyDone || again.HandoffLSN != res.HandoffLSN {
		t.Fatalf("init after a finished one: %+v, %v; want AlreadyDone at %s", again, err, res.HandoffLSN)
	}

	streamAndVerify(t, src, dst, b.URL(), topic, func() { stopShardLoad(); stopLoad() })
}

// shardLoad writes to shard until stopped, moving rows between its
// partitions.
func shardLoad(t *testing.T, srv *pglocal.Server) (stop func()) {
	return servicetest.WriteUntilStopped(t, srv, func(i int) string {
		return fmt.Sprintf(`
				INSERT INTO shard VALUES (100000 + %[1]d, %[1]d %% 2 = 0, 'load');
				UPDATE shard SET pad = pad || '.' WHERE id = %[1]d %% 12000 + 1 AND big;
				UPDATE shard SET big = true WHERE id = 20001 + %[1]d %% 50 AND NOT big;`, i)
	})
}

// copiedTables lists the tables init recorded as committed on the target.
func copiedTables(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, _ := conn.Query(context.Background(), `SELECT DISTINCT table_name FROM pgtandem.init_tables ORDER BY 1`)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// xminSum fingerprints the transactions that wrote a table's rows.
func xminSum(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var sum string
	if err := conn.QueryRow(context.Background(), `SELECT count(*) || ' rows, xmin sum ' || sum(xmin::text::bigint) FROM `+table).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	return sum
}
