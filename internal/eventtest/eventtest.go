// Package eventtest reads a pgtandem topic back in tests, checking the
// transaction framing every consumer relies on as it goes.
package eventtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// Txn is one transaction read from a topic.
type Txn struct {
	Begin   *event.Event
	Changes []*event.Event
	Commit  *event.Event
}

// ReadTxns reads the topic from the start until it has read want complete
// transactions (or more, if they arrive before the wait ends) and nothing
// more arrives for a short while, or until timeout. It fails the test on any
// framing fault: a change outside a transaction, a seq gap, a COMMIT whose
// row count disagrees, or commit LSNs that do not increase.
func ReadTxns(t testing.TB, url, topic string, want int, timeout time.Duration) []Txn {
	t.Helper()
	client, err := pulsarclient.New(pulsarclient.Options{URL: url, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: topic, StartMessageID: pulsar.EarliestMessageID()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	deadline := time.Now().Add(timeout)
	var txns []Txn
	var open *Txn
	var lastLSN event.LSN
	for time.Now().Before(deadline) {
		wait := time.Until(deadline)
		if len(txns) >= want && open == nil {
			wait = 300 * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		msg, err := reader.Next(ctx)
		cancel()
		if err != nil {
			if len(txns) >= want && open == nil {
				return txns
			}
			continue
		}
		f, err := event.DecodeFrame(msg.Payload())
		if err != nil {
			t.Fatalf("message %s: %v", msg.ID(), err)
		}
		for _, ev := range f.Events() {
			if err := frame(&open, &txns, &lastLSN, ev); err != nil {
				t.Fatalf("message %s (lsn %s seq %d kind %s): %v", msg.ID(), ev.LSN, ev.Seq, ev.Kind, err)
			}
		}
	}
	t.Fatalf("read %d complete transactions from %s within %s, want %d (open transaction: %v)", len(txns), topic, timeout, want, open != nil)
	return nil
}

func frame(open **Txn, txns *[]Txn, lastLSN *event.LSN, ev *event.Event) error {
	switch ev.Kind {
	case event.KindBegin:
		if *open != nil {
			return fmt.Errorf("BEGIN while transaction %s is open", (*open).Begin.LSN)
		}
		if ev.Seq != 0 {
			return fmt.Errorf("BEGIN with seq %d", ev.Seq)
		}
		if ev.LSN <= *lastLSN {
			return fmt.Errorf("commit LSN %s does not follow %s: duplicate or reordered transaction", ev.LSN, *lastLSN)
		}
		*open = &Txn{Begin: ev}
		return nil
	}
	o := *open
	if o == nil {
		return fmt.Errorf("%s outside a transaction", ev.Kind)
	}
	if ev.LSN != o.Begin.LSN || ev.Xid != o.Begin.Xid {
		return fmt.Errorf("belongs to lsn %s xid %d, open transaction is lsn %s xid %d", ev.LSN, ev.Xid, o.Begin.LSN, o.Begin.Xid)
	}
	if ev.Seq != len(o.Changes)+1 {
		return fmt.Errorf("seq %d, want %d", ev.Seq, len(o.Changes)+1)
	}
	if ev.Kind != event.KindCommit {
		o.Changes = append(o.Changes, ev)
		return nil
	}
	if ev.Rows != len(o.Changes) {
		return fmt.Errorf("COMMIT says %d rows, transaction has %d", ev.Rows, len(o.Changes))
	}
	o.Commit = ev
	*txns = append(*txns, *o)
	*lastLSN = ev.LSN
	*open = nil
	return nil
}

// Changes flattens the row changes of txns that touch the given table.
func Changes(txns []Txn, schema, table string) []*event.Event {
	var out []*event.Event
	for _, tx := range txns {
		for _, ev := range tx.Changes {
			if ev.Schema == schema && ev.Table == table {
				out = append(out, ev)
			}
		}
	}
	return out
}

// Value returns a row's value of a column as text, "<NULL>" for NULL and
// "<absent>" for a column the row does not carry.
func Value(row map[string]*string, col string) string {
	v, ok := row[col]
	switch {
	case !ok:
		return "<absent>"
	case v == nil:
		return "<NULL>"
	}
	return *v
}

// CheckLoad asserts that txns hold each committed transaction of a load
// exactly once, complete and in commit order. The load writes transaction
// number n as rowsOf[n] rows into table, with n in a column named txn and
// increasing in commit order.
func CheckLoad(t testing.TB, txns []Txn, table string, rowsOf map[int]int) {
	t.Helper()
	seen := map[int]int{}
	prev := 0
	for _, tx := range txns {
		if len(tx.Changes) == 0 || tx.Changes[0].Table != table {
			continue
		}
		n, err := strconv.Atoi(Value(tx.Changes[0].New, "txn"))
		if err != nil {
			t.Fatalf("transaction at %s: txn column %q", tx.Begin.LSN, Value(tx.Changes[0].New, "txn"))
		}
		if seen[n] > 0 {
			t.Fatalf("transaction %d appears twice", n)
		}
		if n <= prev {
			t.Fatalf("transaction %d after %d: out of commit order", n, prev)
		}
		prev = n
		seen[n] = len(tx.Changes)
	}
	for n, rows := range rowsOf {
		if seen[n] != rows {
			t.Fatalf("transaction %d: %d rows in the topic, %d committed", n, seen[n], rows)
		}
	}
	if len(seen) != len(rowsOf) {
		t.Fatalf("topic holds %d transactions of %s, %d were committed", len(seen), table, len(rowsOf))
	}
}

// SameRows checks that each table holds the same rows on a source and a
// target, compared as row::text and sorted: the end-to-end proof of an
// apply, byte for byte, duplicates included.
func SameRows(src, dst *pgx.Conn, tables ...string) error {
	for _, table := range tables {
		a, err := rowsText(src, table)
		if err != nil {
			return fmt.Errorf("source %s: %w", table, err)
		}
		b, err := rowsText(dst, table)
		if err != nil {
			return fmt.Errorf("target %s: %w", table, err)
		}
		if !slices.Equal(a, b) {
			return fmt.Errorf("table %s differs: source %d rows, target %d rows\nsource: %.600v\ntarget: %.600v", table, len(a), len(b), a, b)
		}
	}
	return nil
}

func rowsText(conn *pgx.Conn, table string) ([]string, error) {
	rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT t::text FROM %s AS t`, table))
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	slices.Sort(out)
	return out, err
}
