package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
)

// TestTopicTail captures three transactions of a PostgreSQL 17 and reads
// them back with `pgtandem topic tail`: text, JSON lines that decode into
// event.Event, and --start at the second transaction's LSN.
func TestTopicTail(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and the broker")
	}
	srv := pgtest.Start(t, 17)
	conn := pgtest.Connect(t, srv, "postgres")
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, note text)`); err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t)
	topic := "persistent://public/default/tail"
	_, stop := servicetest.Capture(t, srv, "old", b.URL(), topic)
	for _, q := range []string{`INSERT INTO items VALUES (1, 'one'), (2, NULL)`, `UPDATE items SET note = 'it''s' WHERE id = 2`, `DELETE FROM items WHERE id = 1`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	txns := eventtest.ReadTxns(t, b.URL(), topic, 3, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("clusters:\n  old:\n    dsn: %s\n    topic: %s\npulsar:\n  url: %s\n", srv.DSN("postgres"), topic, b.URL()))

	code, out, errOut := runCLI(t, nil, "topic", "tail", "--config", cfg, "--from", "old")
	if code != 0 {
		t.Fatalf("tail: exit %d, %s", code, errOut)
	}
	for _, want := range []string{`insert "public"."items" new (id="1", note="one")`, `new (id="2", note=NULL)`, `update "public"."items" new (id="2", note="it's")`, `delete "public"."items" old (id="1")`} {
		if !strings.Contains(out, want) {
			t.Errorf("tail output lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = runCLI(t, nil, "topic", "tail", "--config", cfg, "--from", "old", "--json", "--start", txns[1].Begin.LSN.String())
	if code != 0 {
		t.Fatalf("tail --json: exit %d, %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("tail --json --start %s printed %d lines, want the update and the delete:\n%s", txns[1].Begin.LSN, len(lines), out)
	}
	var ev event.Event
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatalf("line %q: %v", lines[0], err)
	}
	if ev.Kind != event.KindUpdate || ev.LSN != txns[1].Begin.LSN || ev.Seq != 1 || *ev.New["note"] != "it's" || ev.Table != "items" {
		t.Fatalf("JSON line decodes as %+v", ev)
	}

	if code, _, errOut = runCLI(t, nil, "topic", "tail", "--config", cfg, "--from", "old", "--start", "yesterday"); code == 0 || !strings.Contains(errOut, "--start") {
		t.Fatalf("--start yesterday: exit %d, %s", code, errOut)
	}
}
