package pg2broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// TestPreflightRefusesPartitionIdentityMismatch: a partitioned table with
// REPLICA IDENTITY FULL on its root only is published through the root as
// FULL, while each partition logs just its primary key in the old row.
// Capture refuses to start, names both partitions with the statement that
// fixes each, creates no publication, and runs once they ran: then an
// UPDATE's old row holds every column.
func TestPreflightRefusesPartitionIdentityMismatch(t *testing.T) {
	srv := pgtest.Start(t, 17)
	conn := pgtest.Connect(t, srv, "postgres")
	b := brokertest.Start(t)
	exec(t, conn, `CREATE TABLE ev (id bigint, region text, payload text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');
		CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');
		ALTER TABLE ev REPLICA IDENTITY FULL`)
	topic := "persistent://public/default/partition-identity"

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := servicetest.NewCapture(t, srv, "src", b.URL(), topic).Run(ctx)
	var pe *catalog.PartitionIdentityError
	if !errors.As(err, &pe) || !pg2broker.IsFatal(err) {
		t.Fatalf("Run = %v, want a fatal PartitionIdentityError", err)
	}
	for _, fix := range []string{"ALTER TABLE public.ev_eu REPLICA IDENTITY FULL;", "ALTER TABLE public.ev_us REPLICA IDENTITY FULL;"} {
		if !strings.Contains(err.Error(), fix) {
			t.Errorf("error lacks %q: %v", fix, err)
		}
	}
	if len(pe.Partitions) != 2 {
		t.Errorf("partitions %+v, want ev_eu and ev_us", pe.Partitions)
	}
	var pubs int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication`).Scan(&pubs); err != nil || pubs != 0 {
		t.Fatalf("publications after refusal: %d, %v", pubs, err)
	}

	for _, p := range pe.Partitions {
		exec(t, conn, p.Fix)
	}
	stop := capture(t, srv, b.URL(), topic)
	exec(t, conn, `INSERT INTO ev VALUES (1, 'eu', 'a'), (2, 'us', 'b')`)
	exec(t, conn, `UPDATE ev SET payload = 'changed' WHERE id = 2`)
	txns := eventtest.ReadTxns(t, b.URL(), topic, 2, time.Minute)
	changes := eventtest.Changes(txns, "public", "ev")
	if len(changes) != 3 || changes[2].Kind != event.KindUpdate || eventtest.Value(changes[2].Old, "payload") != "b" {
		t.Fatalf("changes of ev %+v: want 2 inserts and an update whose old row holds payload b", changes)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
