package event

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	v := "it's \"quoted\" 😀"
	ev := &Event{V: Version, Kind: KindUpdate, Xid: 7, LSN: 0x16B374D848, Seq: 2, Schema: "public", Table: "T",
		ReplicaIdentity: "default",
		Columns:         []Column{{Name: "id", Type: "integer", Key: true}, {Name: "v", Type: "text"}, {Name: "big", Type: "text"}},
		New:             map[string]*string{"id": ptr("2"), "v": &v}, Unchanged: []string{"big"}, Old: map[string]*string{"id": ptr("1")}}
	data, err := Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"lsn":"16/B374D848"`) {
		t.Fatalf("LSN not in PostgreSQL form: %s", data)
	}
	back, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.LSN != ev.LSN || *back.New["v"] != v || back.Unchanged[0] != "big" || back.Key() != "public.T:1" {
		t.Fatalf("round trip changed the event: %+v", back)
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	cases := map[string]string{
		"not json":        `{"v":1,`,
		"future version":  `{"v":2,"kind":"begin","lsn":"0/1"}`,
		"unknown kind":    `{"v":1,"kind":"upsert","lsn":"0/1"}`,
		"no lsn":          `{"v":1,"kind":"begin"}`,
		"bad lsn":         `{"v":1,"kind":"begin","lsn":"zz"}`,
		"commit, no end":  `{"v":1,"kind":"commit","lsn":"0/1"}`,
		"insert, no row":  `{"v":1,"kind":"insert","lsn":"0/1","table":"t","columns":[{"name":"a","type":"int"}]}`,
		"delete, no old":  `{"v":1,"kind":"delete","lsn":"0/1","table":"t","columns":[{"name":"a","type":"int"}]}`,
		"truncate, empty": `{"v":1,"kind":"truncate","lsn":"0/1"}`,
	}
	for name, payload := range cases {
		_, err := Unmarshal([]byte(payload))
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: err = %v, want *DecodeError", name, err)
		}
	}
}

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
