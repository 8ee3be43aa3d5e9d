package catalog_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pgtest"
)

// TestPartitionIdentityErrorText: the error names each partition, its
// identity and its root's, and the statements that fix it.
func TestPartitionIdentityErrorText(t *testing.T) {
	err := error(&catalog.PartitionIdentityError{
		Partitions: []catalog.PartitionIdentity{
			{Root: "public.ev", Partition: "public.ev_eu", RootIdentity: "FULL", PartitionIdentity: "DEFAULT (id, region)",
				Fix: "ALTER TABLE public.ev_eu REPLICA IDENTITY FULL;"},
			{Root: "public.ev", Partition: `public."EV us"`, RootIdentity: "FULL", PartitionIdentity: "DEFAULT (id, region)",
				Fix: `ALTER TABLE public."EV us" REPLICA IDENTITY FULL;`},
		},
		RootFixes: []string{"ALTER TABLE public.ev REPLICA IDENTITY DEFAULT;"},
	})
	want := `preflight partition replica identity: 2 partition(s) have another replica identity than the partitioned table their changes are published through; PostgreSQL logs their old rows with the partition's identity but describes them with the root's, so their UPDATE and DELETE could not be matched on the target:
  public.ev_eu is DEFAULT (id, region), its root public.ev is FULL
  public."EV us" is DEFAULT (id, region), its root public.ev is FULL
  fix, each partition like its root:
  ALTER TABLE public.ev_eu REPLICA IDENTITY FULL;
  ALTER TABLE public."EV us" REPLICA IDENTITY FULL;
  or each root like its partitions:
  ALTER TABLE public.ev REPLICA IDENTITY DEFAULT;`
	if err.Error() != want {
		t.Errorf("error text:\n%s\nwant:\n%s", err, want)
	}
	var pe *catalog.PartitionIdentityError
	if !errors.As(err, &pe) {
		t.Error("not found with errors.As")
	}
}

// TestPrepareSourcePartitionIdentity: on the oldest major that publishes
// partitions through their root, PrepareSource refuses leaf partitions
// whose identity differs from their root's (also below an intermediate
// partitioned table, also by other identity columns), creates no
// publication, and passes once the printed statements ran.
func TestPrepareSourcePartitionIdentity(t *testing.T) {
	srv := pgtest.Start(t, 13)
	conn := pgtest.Connect(t, srv, "postgres")
	ctx := context.Background()
	_, err := conn.Exec(ctx, `
		CREATE TABLE ev (id bigint, region text, payload text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');
		CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');
		ALTER TABLE ev REPLICA IDENTITY FULL;
		CREATE TABLE m (id int, at date, k int NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE UNIQUE INDEX m_k ON m (k, at);
		CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
		CREATE TABLE m_2024_h1 PARTITION OF m_2024 FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
		CREATE TABLE m_2024_h2 PARTITION OF m_2024 FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
		CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		ALTER TABLE m_2024_h1 REPLICA IDENTITY FULL;
		ALTER TABLE m_2025 REPLICA IDENTITY USING INDEX m_2025_k_at_idx;
		CREATE TABLE same (id int PRIMARY KEY, v text) PARTITION BY HASH (id);
		CREATE TABLE same_0 PARTITION OF same FOR VALUES WITH (MODULUS 2, REMAINDER 0);
		CREATE TABLE same_1 PARTITION OF same FOR VALUES WITH (MODULUS 2, REMAINDER 1);
		ALTER TABLE same REPLICA IDENTITY FULL;
		ALTER TABLE same_0 REPLICA IDENTITY FULL;
		ALTER TABLE same_1 REPLICA IDENTITY FULL;`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = catalog.PrepareSource(ctx, conn, true)
	var pe *catalog.PartitionIdentityError
	if !errors.As(err, &pe) {
		t.Fatalf("PrepareSource = %v, want a *PartitionIdentityError", err)
	}
	var got []string
	for _, p := range pe.Partitions {
		got = append(got, p.Partition+": "+p.PartitionIdentity+" under "+p.RootIdentity+": "+p.Fix)
	}
	want := []string{
		"public.ev_eu: DEFAULT (id, region) under FULL: ALTER TABLE public.ev_eu REPLICA IDENTITY FULL;",
		"public.ev_us: DEFAULT (id, region) under FULL: ALTER TABLE public.ev_us REPLICA IDENTITY FULL;",
		"public.m_2024_h1: FULL under DEFAULT (at, id): ALTER TABLE public.m_2024_h1 REPLICA IDENTITY DEFAULT;",
		"public.m_2025: USING INDEX (at, k) under DEFAULT (at, id): ALTER TABLE public.m_2025 REPLICA IDENTITY DEFAULT;",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("partitions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Join(pe.RootFixes, "\n") != "ALTER TABLE public.ev REPLICA IDENTITY DEFAULT;" {
		t.Errorf("root fixes %q, want only ev's (m's partitions do not all log its key)", pe.RootFixes)
	}
	var pubs int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication`).Scan(&pubs); err != nil || pubs != 0 {
		t.Fatalf("publications after refusal: %d, %v", pubs, err)
	}

	for _, p := range pe.Partitions {
		if _, err := conn.Exec(ctx, p.Fix); err != nil {
			t.Fatalf("%s: %v", p.Fix, err)
		}
	}
	if _, err := catalog.PrepareSource(ctx, conn, true); err != nil {
		t.Fatalf("PrepareSource after the fixes: %v", err)
	}

	// A root that uses an index as identity: the fix names each
	// partition's part of that index.
	if _, err := conn.Exec(ctx, `ALTER TABLE m REPLICA IDENTITY USING INDEX m_k`); err != nil {
		t.Fatal(err)
	}
	_, err = catalog.PrepareSource(ctx, conn, false)
	if !errors.As(err, &pe) {
		t.Fatalf("PrepareSource = %v, want a *PartitionIdentityError", err)
	}
	got = got[:0]
	for _, p := range pe.Partitions {
		got = append(got, p.Fix)
	}
	want = []string{
		"ALTER TABLE public.m_2024_h1 REPLICA IDENTITY USING INDEX m_2024_h1_k_at_idx;",
		"ALTER TABLE public.m_2024_h2 REPLICA IDENTITY USING INDEX m_2024_h2_k_at_idx;",
		"ALTER TABLE public.m_2025 REPLICA IDENTITY USING INDEX m_2025_k_at_idx;",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("fixes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
