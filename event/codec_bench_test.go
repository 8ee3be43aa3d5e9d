package event

import (
	"testing"
	"time"
)

func pgbenchUpdate() *Event {
	s := func(v string) *string { return &v }
	return &Event{
		V: Version, Kind: KindUpdate, Xid: 123456, LSN: 0x1A2B3C8, CommitTime: time.Date(2026, 11, 22, 1, 30, 11, 482913000, time.UTC), Seq: 1,
		Schema: "public", Table: "pgbench_accounts", ReplicaIdentity: "default",
		Columns: []Column{{Name: "aid", Type: "integer", Key: true}, {Name: "bid", Type: "integer"}, {Name: "abalance", Type: "integer"}, {Name: "filler", Type: "character(84)"}},
		New:     map[string]*string{"aid": s("81234"), "bid": s("1"), "abalance": s("-4123"), "filler": s("                                                                                    ")},
	}
}

// BenchmarkMarshal and BenchmarkUnmarshal measure the codec on the most
// common message of a busy topic, a row change: both services pay them once
// per message.
func BenchmarkMarshal(b *testing.B) {
	ev := pgbenchUpdate()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	data, err := Marshal(pgbenchUpdate())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
}
