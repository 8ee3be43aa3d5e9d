package event

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestKey(t *testing.T) {
	cols := []Column{{Name: "a", Key: true}, {Name: "b", Key: true}, {Name: "v"}}
	del := &Event{Kind: KindDelete, Schema: "s", Table: "t", Columns: cols, Old: map[string]*string{"a": ptr("1"), "b": nil}}
	if k := del.Key(); k != "s.t:1,NULL" {
		t.Fatalf("delete key %q", k)
	}
	full := &Event{Kind: KindInsert, Schema: "s", Table: "t", ReplicaIdentity: "full", Columns: cols, New: map[string]*string{"a": ptr("1")}}
	if k := full.Key(); k != "s.t" {
		t.Fatalf("full-identity key %q", k)
	}
	if q := QuoteIdent(`we"ird`); q != `"we""ird"` {
		t.Fatalf("QuoteIdent %s", q)
	}
}

func ptr(s string) *string { return &s }

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]LSN{"0/0": 0, "16/B374D848": 0x16B374D848, "FFFFFFFF/FFFFFFFF": LSN(^uint64(0))} {
		got, err := ParseLSN(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseLSN(%q) = %v (%s), %v", in, uint64(got), got, err)
		}
	}
	for _, bad := range []string{"", "1", "/1", "1/", "g/1", "1/2/3", "123456789/0", "-1/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

func TestLSNPrintsAsPostgreSQL(t *testing.T) {
	for _, v := range []uint64{0, 1, 0x16B374D848, 0xFFFFFFFF, 1 << 32, 0xA0000000F, ^uint64(0)} {
		if got, want := LSN(v).String(), pglogrepl.LSN(v).String(); got != want {
			t.Errorf("LSN %#x prints %q, PostgreSQL prints %q", v, got, want)
		}
		if back, err := ParseLSN(LSN(v).String()); err != nil || back != LSN(v) {
			t.Errorf("LSN %#x reads back as %#x, %v", v, uint64(back), err)
		}
	}
}
