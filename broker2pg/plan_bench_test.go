package broker2pg

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/event"
)

// pgbenchFrames encodes n transactions of pgbench's tpcb-like script as
// the capture frames them: three UPDATEs and an INSERT each.
func pgbenchFrames(tb testing.TB, n int) [][]byte {
	tb.Helper()
	cols := func(key string, names ...string) []event.Column {
		var out []event.Column
		for _, name := range names {
			out = append(out, event.Column{Name: name, Type: "integer", Key: name == key})
		}
		return out
	}
	accounts := cols("aid", "aid", "bid", "abalance", "filler")
	tellers := cols("tid", "tid", "bid", "tbalance", "filler")
	branches := cols("bid", "bid", "bbalance", "filler")
	history := cols("", "tid", "bid", "aid", "delta", "mtime", "filler")
	s := func(v string) *string { return &v }
	filler := s("                                                                                    ")
	framer := event.NewFramer("bench", 0, 0)
	var frames [][]byte
	for i := range n {
		lsn := event.LSN(0x1000 + i*0x100)
		base := event.Event{V: event.Version, Xid: uint32(1000 + i), LSN: lsn, CommitTime: time.Unix(1700000000, int64(i)).UTC()}
		change := func(seq int, kind event.Kind, table string, c []event.Column, row map[string]*string) *event.Event {
			ev := base
			ev.Kind, ev.Seq, ev.Schema, ev.Table, ev.ReplicaIdentity, ev.Columns, ev.New = kind, seq, "public", table, "default", c, row
			return &ev
		}
		aid, tid, bid, delta := s(strconv.Itoa(1+i*7919%100000)), s(strconv.Itoa(1+i%10)), s("1"), s(strconv.Itoa(i%5000-2500))
		evs := []*event.Event{
			{V: event.Version, Kind: event.KindBegin, Xid: base.Xid, LSN: lsn, CommitTime: base.CommitTime},
			change(1, event.KindUpdate, "pgbench_accounts", accounts, map[string]*string{"aid": aid, "bid": bid, "abalance": delta, "filler": filler}),
			change(2, event.KindUpdate, "pgbench_tellers", tellers, map[string]*string{"tid": tid, "bid": bid, "tbalance": delta, "filler": nil}),
			change(3, event.KindUpdate, "pgbench_branches", branches, map[string]*string{"bid": bid, "bbalance": delta, "filler": nil}),
			change(4, event.KindInsert, "pgbench_history", history, map[string]*string{"tid": tid, "bid": bid, "aid": aid, "delta": delta, "mtime": s("2026-12-01 07:00:00.123456"), "filler": nil}),
			{V: event.Version, Kind: event.KindCommit, Xid: base.Xid, LSN: lsn, CommitTime: base.CommitTime, Seq: 5, EndLSN: lsn + 0x80, Rows: 4},
		}
		for _, ev := range evs {
			enc, err := framer.Add(ev)
			if err != nil {
				tb.Fatal(err)
			}
			if enc != nil {
				frames = append(frames, enc.Payload)
			}
		}
	}
	return frames
}

// BenchmarkDecodeAndPlan is the apply's CPU per pgbench transaction without
// a server or a broker: frames decoded, their changes planned, the plan
// taken every 268 transactions (the group a drain commits at on 2 cores).
func BenchmarkDecodeAndPlan(b *testing.B) {
	frames := pgbenchFrames(b, 2680)
	c := &schemaCache{tables: map[event.TableName]*targetTable{}}
	for _, t := range []*targetTable{
		testTable("pgbench_accounts", [][]string{{"aid"}}, "aid integer", "bid integer", "abalance integer", "filler character(84)"),
		testTable("pgbench_tellers", [][]string{{"tid"}}, "tid integer", "bid integer", "tbalance integer", "filler character(84)"),
		testTable("pgbench_branches", [][]string{{"bid"}}, "bid integer", "bbalance integer", "filler character(88)"),
		testTable("pgbench_history", nil, "tid integer", "bid integer", "aid integer", "delta integer", "mtime timestamp", "filler character(22)"),
	} {
		c.tables[t.name] = t
	}
	ctx := context.Background()
	id := pulsar.NewMessageID(1, 1, -1, -1)
	b.ReportAllocs()
	for b.Loop() {
		dec := event.NewDecoder()
		p := newPlan(c)
		for i, payload := range frames {
			f, err := dec.Decode(payload)
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range f.Changes {
				if err := p.add(ctx, ev, id, len(payload)/4); err != nil {
					b.Fatal(err)
				}
			}
			if i%268 == 267 {
				p.take()
			}
		}
		p.take()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/txn")
}
