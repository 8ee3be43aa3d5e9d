package pg2broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/event"
)

// The decoder tests read pgoutput as real servers sent it: the files in
// testdata/pgoutput were recorded once by testdata/pgoutput/record (run it
// again to add a major), one workload on PostgreSQL 13 (protocol 1),
// 14 (2), 15 (3), 16 and 17 (4). What no server sends to pg2broker's slot
// options (streaming, binary tuples, broken sequences) is hand-built below,
// in the style of pglogrepl's message_test.go.

type recordedMessage struct {
	walStart pglogrepl.LSN
	data     []byte
}

func readRecording(t testing.TB, name string) []recordedMessage {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "pgoutput", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []recordedMessage
	lines := bufio.NewScanner(f)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		line := lines.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lsnText, payload, ok := strings.Cut(line, " ")
		lsn, err := pglogrepl.ParseLSN(lsnText)
		if !ok || err != nil {
			t.Fatalf("%s: bad line %.40q: %v", name, line, err)
		}
		data, err := hex.DecodeString(payload)
		if err != nil {
			t.Fatalf("%s: bad payload at %s: %v", name, lsn, err)
		}
		out = append(out, recordedMessage{walStart: lsn, data: data})
	}
	if err := lines.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fakeTypeNames names the types of the recorded tables the way format_type
// would, and counts how often each type is asked for.
type fakeTypeNames struct {
	asked map[typeKey]int
}

func (f *fakeTypeNames) name(_ context.Context, oid uint32, typmod int32) (string, error) {
	f.asked[typeKey{oid, typmod}]++
	switch {
	case oid == 23:
		return "integer", nil
	case oid == 25:
		return "text", nil
	case oid == 3220:
		return "pg_lsn", nil
	case oid == 1700 && typmod >= 4:
		return fmt.Sprintf("numeric(%d,%d)", (typmod-4)>>16, (typmod-4)&0xffff), nil
	case oid >= 16384: // the only user-defined type of the recordings
		return "public.mood", nil
	}
	return "", fmt.Errorf("no name for type %d", oid)
}

// recordedTxn is one decoded transaction: BEGIN, changes, COMMIT.
type recordedTxn struct {
	begin, commit *event.Event
	changes       []*event.Event
}

func (tx recordedTxn) summary() string {
	var parts []string
	for _, ev := range tx.changes {
		parts = append(parts, fmt.Sprintf("%s %s.%s", ev.Kind, ev.Schema, ev.Table))
	}
	return strings.Join(parts, "; ")
}

// decodeRecording feeds every message to a decoder and returns the
// transactions it emitted and the ends of those it dropped.
func decodeRecording(t *testing.T, msgs []recordedMessage, names *fakeTypeNames) (txns []recordedTxn, skippedEnds []pglogrepl.LSN) {
	t.Helper()
	d := newDecoder(names.name, "pgtandem_")
	var open *recordedTxn
	for _, m := range msgs {
		events, err := d.decode(context.Background(), m.walStart, m.data)
		if err != nil {
			t.Fatalf("decode %c message at %s: %v", m.data[0], m.walStart, err)
		}
		if end, ok := d.takeSkipped(); ok {
			// It is the end of the transaction whose COMMIT this was.
			if commit, err := pglogrepl.Parse(m.data); err != nil || commit.(*pglogrepl.CommitMessage).TransactionEndLSN != end {
				t.Fatalf("skipped end %s reported at %c message at %s, which is not the COMMIT ending there", end, m.data[0], m.walStart)
			}
			skippedEnds = append(skippedEnds, end)
		}
		for _, ev := range events {
			switch {
			case ev.Kind == event.KindBegin && open == nil:
				open = &recordedTxn{begin: ev}
			case open == nil:
				t.Fatalf("%s event at %s outside a transaction", ev.Kind, ev.LSN)
			case ev.Kind == event.KindCommit:
				open.commit = ev
				txns = append(txns, *open)
				open = nil
			default:
				open.changes = append(open.changes, ev)
			}
		}
	}
	if open != nil {
		t.Fatalf("recording ends inside the transaction at %s", open.begin.LSN)
	}
	return txns, skippedEnds
}

func value(row map[string]*string, col string) string {
	v, ok := row[col]
	switch {
	case !ok:
		return "<absent>"
	case v == nil:
		return "<null>"
	}
	return *v
}

func rowText(row map[string]*string) string {
	if row == nil {
		return "<none>"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(row)) {
		parts = append(parts, k+"="+value(row, k))
	}
	return strings.Join(parts, " ")
}

func TestDecodeRecordedPgoutput(t *testing.T) {
	for _, rec := range []struct {
		file  string
		proto int
	}{{"v1-pg13.txt", 1}, {"v2-pg14.txt", 2}, {"v3-pg15.txt", 3}, {"v4-pg16.txt", 4}, {"v4-pg17.txt", 4}} {
		t.Run(rec.file, func(t *testing.T) {
			names := &fakeTypeNames{asked: map[typeKey]int{}}
			txns, skipped := decodeRecording(t, readRecording(t, rec.file), names)
			checkRecordedTxns(t, rec.proto, txns, skipped)
			for key, n := range names.asked {
				if n != 1 {
					t.Errorf("type %d (typmod %d) named %d times, want once", key.oid, key.typmod, n)
				}
			}
		})
	}
}

// checkRecordedTxns checks the transactions of record/main.go's workload.
func checkRecordedTxns(t *testing.T, proto int, txns []recordedTxn, skipped []pglogrepl.LSN) {
	t.Helper()
	want := []string{
		"insert public.item; insert public.item",
		"update public.item",
		"update public.item",
		"delete public.item",
		"insert public.dup; insert public.dup; update public.dup; delete public.dup",
		"insert public.parent; insert public.child; insert public.counter",
		"truncate .",
		"message .",
		// The transaction of origin pgtandem_peer is dropped whole; the one
		// of other_peer is not pgtandem's and stays.
		"insert public.item",
		// pgtandem's bookkeeping rows never leave the cluster.
		"insert public.item",
		"",
	}
	if proto < 2 {
		want = slices.Delete(want, 7, 8) // logical messages need protocol 2
	}
	var got []string
	for _, tx := range txns {
		got = append(got, tx.summary())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("transactions:\n got %q\nwant %q", got, want)
	}

	// Envelopes: one LSN, xid and commit time per transaction, Seq from 0
	// without gaps (also where bookkeeping rows were left out), Rows the
	// number of changes, commit order.
	var prevEnd pglogrepl.LSN
	for i, tx := range txns {
		all := append(append([]*event.Event{tx.begin}, tx.changes...), tx.commit)
		for seq, ev := range all {
			if ev.V != event.Version || ev.LSN != tx.begin.LSN || ev.Xid != tx.begin.Xid || !ev.CommitTime.Equal(tx.begin.CommitTime) || ev.Seq != seq {
				t.Fatalf("txn %d event %d: v %d lsn %s xid %d time %s seq %d; BEGIN has lsn %s xid %d time %s",
					i, seq, ev.V, ev.LSN, ev.Xid, ev.CommitTime, ev.Seq, tx.begin.LSN, tx.begin.Xid, tx.begin.CommitTime)
			}
		}
		if tx.commit.Rows != len(tx.changes) || pglogrepl.LSN(tx.commit.EndLSN) <= pglogrepl.LSN(tx.commit.LSN) || pglogrepl.LSN(tx.begin.LSN) <= prevEnd {
			t.Fatalf("txn %d: commit lsn %s end %s rows %d (changes %d), previous end %s", i, tx.commit.LSN, tx.commit.EndLSN, tx.commit.Rows, len(tx.changes), prevEnd)
		}
		prevEnd = pglogrepl.LSN(tx.commit.EndLSN)
	}
	// The dropped transaction still reports its end, so the slot can be
	// confirmed past it, between its neighbours.
	before, after := txns[len(txns)-4], txns[len(txns)-3]
	if len(skipped) != 1 || skipped[0] <= pglogrepl.LSN(before.commit.EndLSN) || skipped[0] > pglogrepl.LSN(after.begin.LSN) {
		t.Fatalf("skipped ends %v, want one between %s and %s", skipped, before.commit.EndLSN, after.begin.LSN)
	}

	ins1, ins2 := txns[0].changes[0], txns[0].changes[1]
	wantCols := []event.Column{{Name: "id", Type: "integer", Key: true}, {Name: "name", Type: "text"}, {Name: "big", Type: "text"},
		{Name: "m", Type: "public.mood"}, {Name: "price", Type: "numeric(10,2)"}}
	if !slices.Equal(ins1.Columns, wantCols) || ins1.ReplicaIdentity != "default" {
		t.Fatalf("item columns %+v identity %q, want %+v default", ins1.Columns, ins1.ReplicaIdentity, wantCols)
	}
	if got, want := rowText(ins1.New), "big="+strings.Repeat("x", 5000)+" id=1 m=happy name=one price=1.50"; got != want || ins1.Old != nil {
		t.Fatalf("insert 1: new %.80s old %v", got, ins1.Old)
	}
	// NULL ('n') is a JSON null, not a missing value.
	if got := rowText(ins2.New); got != "big=small id=2 m=<null> name=<null> price=<null>" {
		t.Fatalf("insert 2: new %s", got)
	}
	// Unchanged TOAST ('u') is left out of New and named, never NULL.
	up := txns[1].changes[0]
	if got := rowText(up.New); got != "id=1 m=happy name=uno price=1.50" || !slices.Equal(up.Unchanged, []string{"big"}) || up.Old != nil {
		t.Fatalf("update with unchanged TOAST: new %s unchanged %v old %v", got, up.Unchanged, up.Old)
	}
	// A key change carries the old key ('K') and nothing else of the old row.
	keyUp := txns[2].changes[0]
	if old, nw := rowText(keyUp.Old), rowText(keyUp.New); old != "id=2" || nw != "big=small id=10 m=<null> name=<null> price=<null>" {
		t.Fatalf("key update: old %s new %s", old, nw)
	}
	if del := txns[3].changes[0]; rowText(del.Old) != "id=10" || del.New != nil {
		t.Fatalf("delete: old %s new %v", rowText(del.Old), del.New)
	}
	// REPLICA IDENTITY FULL: the whole old row ('O'), every column a key.
	dup := txns[4].changes
	if dup[0].ReplicaIdentity != "full" || !slices.Equal(dup[0].Columns, []event.Column{{Name: "a", Type: "integer", Key: true}, {Name: "b", Type: "text", Key: true}}) {
		t.Fatalf("dup: identity %q columns %+v", dup[0].ReplicaIdentity, dup[0].Columns)
	}
	if old, nw := rowText(dup[2].Old), rowText(dup[2].New); old != "a=1 b=a" || nw != "a=1 b=b" {
		t.Fatalf("full update: old %s new %s", old, nw)
	}
	if old := rowText(dup[3].Old); old != "a=1 b=a" || dup[3].New != nil {
		t.Fatalf("full delete: old %s new %v", old, dup[3].New)
	}
	trunc := txns[6].changes[0]
	tables := slices.SortedFunc(slices.Values(trunc.Tables), func(a, b event.TableName) int { return strings.Compare(a.Table, b.Table) })
	if fmt.Sprint(tables) != `["public"."child" "public"."counter" "public"."parent"]` || !trunc.Cascade || !trunc.RestartIdentity {
		t.Fatalf("truncate: tables %v cascade %v restart identity %v", tables, trunc.Cascade, trunc.RestartIdentity)
	}
	if proto >= 2 {
		// The non-transactional message of the same statement is not
		// published: it has no transaction to go into.
		msg := txns[7].changes[0]
		if msg.Prefix != "pgtandem-test" || string(msg.Content) != "hello" {
			t.Fatalf("logical message: prefix %q content %q", msg.Prefix, msg.Content)
		}
	}
	if got := rowText(txns[len(txns)-3].changes[0].New); got != "big=<null> id=4 m=<null> name=four price=4.00" {
		t.Fatalf("transaction of another origin: %s", got)
	}
	if got := rowText(txns[len(txns)-2].changes[0].New); got != "big=<null> id=5 m=<null> name=five price=<null>" {
		t.Fatalf("transaction with bookkeeping rows: %s", got)
	}
}

// pgoutputMessage builds pgoutput messages by hand.
type pgoutputMessage []byte

func newMessage(kind byte) pgoutputMessage { return pgoutputMessage{kind} }

func (m pgoutputMessage) u8(v uint8) pgoutputMessage   { return append(m, v) }
func (m pgoutputMessage) u16(v uint16) pgoutputMessage { return binary.BigEndian.AppendUint16(m, v) }
func (m pgoutputMessage) u32(v uint32) pgoutputMessage { return binary.BigEndian.AppendUint32(m, v) }
func (m pgoutputMessage) u64(v uint64) pgoutputMessage { return binary.BigEndian.AppendUint64(m, v) }
func (m pgoutputMessage) str(s string) pgoutputMessage { return append(append(m, s...), 0) }

// pgTime is 2024-01-01 in microseconds since 2000-01-01.
const pgTime = 757_382_400 * 1_000_000

func beginMsg(final pglogrepl.LSN, xid uint32) []byte {
	return newMessage('B').u64(uint64(final)).u64(pgTime).u32(xid)
}

func commitMsg(commit, end pglogrepl.LSN) []byte {
	return newMessage('C').u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgTime)
}

// relationMsg describes public.t (id int key, v text).
func relationMsg(id uint32) []byte {
	m := newMessage('R').u32(id).str("public").str("t").u8('d').u16(2)
	m = m.u8(1).str("id").u32(23).u32(0xffffffff)
	return m.u8(0).str("v").u32(25).u32(0xffffffff)
}

// insertMsg inserts a row of (kind, data) columns into relation id.
func insertMsg(id uint32, cols ...[2]string) []byte {
	m := newMessage('I').u32(id).u8('N').u16(uint16(len(cols)))
	for _, c := range cols {
		m = m.u8(c[0][0])
		if c[0] == "t" || c[0] == "b" {
			m = append(m.u32(uint32(len(c[1]))), c[1]...)
		}
	}
	return m
}

func TestDecodeHandBuilt(t *testing.T) {
	namer := func(_ context.Context, oid uint32, _ int32) (string, error) {
		return map[uint32]string{23: "integer", 25: "text"}[oid], nil
	}
	row := [][2]string{{"t", "1"}, {"n", ""}}
	for _, c := range []struct {
		name string
		msgs [][]byte
		// wantErr is a part of the ProtocolError of the last message, or
		// empty when the sequence decodes.
		wantErr string
	}{
		{"a transaction", [][]byte{beginMsg(0x100, 7), relationMsg(1), insertMsg(1, row...), commitMsg(0x100, 0x120)}, ""},
		// pg2broker does not ask for streaming: a stream would interleave
		// transactions, and its changes carry an xid that the protocol 1
		// parser would take for the relation.
		{"stream start", [][]byte{newMessage('S').u32(7).u8(1)}, "message not supported"},
		{"stream inside a transaction", [][]byte{beginMsg(0x100, 7), newMessage('S').u32(8).u8(1)}, "message not supported"},
		{"change before its relation", [][]byte{beginMsg(0x100, 7), insertMsg(1, row...)}, "before its Relation message"},
		{"change outside a transaction", [][]byte{relationMsg(1), insertMsg(1, row...)}, "Insert outside a transaction"},
		{"transactional message outside a transaction", [][]byte{newMessage('M').u8(1).u64(0x100).str("p").u32(1).u8('x')}, "Message outside a transaction"},
		{"non-transactional message", [][]byte{newMessage('M').u8(0).u64(0x100).str("p").u32(1).u8('x')}, ""},
		{"BEGIN inside a transaction", [][]byte{beginMsg(0x100, 7), beginMsg(0x200, 8)}, "BEGIN inside an open transaction"},
		{"COMMIT without BEGIN", [][]byte{commitMsg(0x100, 0x120)}, "COMMIT without BEGIN"},
		{"COMMIT of another transaction", [][]byte{beginMsg(0x100, 7), commitMsg(0x200, 0x220)}, "does not match BEGIN's final LSN"},
		{"tuple shorter than the relation", [][]byte{beginMsg(0x100, 7), relationMsg(1), insertMsg(1, row[0])}, "tuple has 1 columns, relation has 2"},
		{"truncate with CASCADE only", [][]byte{beginMsg(0x100, 7), relationMsg(1), newMessage('T').u32(1).u8(1).u32(1)}, ""},
		{"truncate with RESTART IDENTITY only", [][]byte{beginMsg(0x100, 7), relationMsg(1), newMessage('T').u32(1).u8(2).u32(1)}, ""},
		{"binary tuple", [][]byte{beginMsg(0x100, 7), relationMsg(1), insertMsg(1, [2]string{"b", "\x00\x00\x00\x01"}, row[1])}, "binary mode is not used"},
		{"truncated message", [][]byte{newMessage('B').u64(0x100)}, "must have 20 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDecoder(namer, "pgtandem_")
			var err error
			var events []*event.Event
			for i, m := range c.msgs {
				var evs []*event.Event
				evs, err = d.decode(context.Background(), pglogrepl.LSN(0x100+i), m)
				events = append(events, evs...)
				if err != nil && i < len(c.msgs)-1 {
					t.Fatalf("message %d of %d: %v", i+1, len(c.msgs), err)
				}
			}
			var pe *ProtocolError
			switch {
			case c.wantErr == "":
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
			case !errors.As(err, &pe) || !IsFatal(err) || !strings.Contains(err.Error(), c.wantErr):
				t.Fatalf("decode = %v, want a fatal ProtocolError containing %q", err, c.wantErr)
			}
			switch c.name {
			case "a transaction":
				if len(events) != 3 || rowText(events[1].New) != "id=1 v=<null>" || events[2].EndLSN != 0x120 || !events[0].CommitTime.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
					t.Fatalf("events %+v", events)
				}
			case "truncate with CASCADE only", "truncate with RESTART IDENTITY only":
				cascade := c.name == "truncate with CASCADE only"
				if tr := events[1]; tr.Kind != event.KindTruncate || tr.Cascade != cascade || tr.RestartIdentity == cascade || fmt.Sprint(tr.Tables) != `["public"."t"]` {
					t.Fatalf("truncate: %+v", tr)
				}
			}
		})
	}
}

// TestDecodeTypeNameError: a type that cannot be named stops the stream
// with the column and table named.
func TestDecodeTypeNameError(t *testing.T) {
	failed := errors.New("connection lost")
	d := newDecoder(func(context.Context, uint32, int32) (string, error) { return "", failed }, "pgtandem_")
	_, err := d.decode(context.Background(), 0x100, relationMsg(1))
	if !errors.Is(err, failed) || !strings.Contains(err.Error(), "column id of public.t") {
		t.Fatalf("decode = %v, want the namer's error naming column id of public.t", err)
	}
}
