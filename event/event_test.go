package event

import (
	stdjson "encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
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

// randomEvent builds an event of every field from fuzz input, with values
// that need escaping and with NULLs.
func randomEvent(kind byte, a, b string, n uint32, flag bool) *Event {
	kinds := []Kind{KindBegin, KindInsert, KindUpdate, KindDelete, KindTruncate, KindMessage, KindCommit}
	ev := &Event{V: Version, Kind: kinds[int(kind)%len(kinds)], Xid: n, LSN: LSN(uint64(n)<<20 | 1), Seq: int(n % 1000),
		CommitTime: time.Unix(int64(n), int64(n%1e9)).UTC()}
	switch ev.Kind {
	case KindInsert, KindUpdate, KindDelete:
		ev.Schema, ev.Table, ev.ReplicaIdentity = a, b+"t", "default"
		ev.Columns = []Column{{Name: a, Type: "text", Key: true}, {Name: b + "x", Type: "numeric(10,2)"}, {Name: "n", Type: b}}
		row := map[string]*string{a: &b, b + "x": &a, "n": nil}
		if ev.Kind != KindDelete {
			ev.New = row
		}
		if ev.Kind != KindInsert {
			ev.Old = map[string]*string{a: &a}
		}
		if flag {
			ev.Unchanged, ev.OldUnchanged = []string{b}, []string{a}
		}
	case KindTruncate:
		ev.Tables = []TableName{{Schema: a, Table: b}, {Schema: b, Table: a}}
		ev.Cascade, ev.RestartIdentity = flag, !flag
	case KindMessage:
		ev.Prefix = a
		if b != "" {
			ev.Content = []byte(b)
		}
	case KindCommit:
		ev.EndLSN, ev.Rows = ev.LSN+LSN(n%100)+1, int(n%7)
	}
	return ev
}

// sameEvent compares two events, the commit time as an instant.
func sameEvent(t *testing.T, what string, got, want *Event) {
	t.Helper()
	g, w := *got, *want
	if !g.CommitTime.Equal(w.CommitTime) {
		t.Fatalf("%s: commit time %v, want %v", what, g.CommitTime, w.CommitTime)
	}
	g.CommitTime, w.CommitTime = time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %#v\nwant %#v", what, g, w)
	}
}

// validUTF8 is what a UTF8 database hands the capture.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// FuzzCodec encodes events of every kind built from arbitrary strings and
// decodes them with this package and with encoding/json: both must give
// back the event, so the encoder's escaping is valid JSON and the decoder
// reads JSON as the standard library does.
func FuzzCodec(f *testing.F) {
	f.Add(byte(2), "public", "it's \"quoted\" \\ 😀 \u2028 \x01 <&>", uint32(7), true)
	f.Add(byte(4), "", "", uint32(0), false)
	f.Add(byte(5), "\t\n\r", "\x7f\u00e9", uint32(1<<31), true)
	f.Fuzz(func(t *testing.T, kind byte, a, b string, n uint32, flag bool) {
		ev := randomEvent(kind, validUTF8(a), validUTF8(b), n, flag)
		data, err := Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !stdjson.Valid(data) {
			t.Fatalf("invalid JSON: %s", data)
		}
		var std Event
		if err := stdjson.Unmarshal(data, &std); err != nil {
			t.Fatalf("encoding/json: %v\n%s", err, data)
		}
		back, err := Unmarshal(data)
		if err != nil {
			if check(ev) != nil {
				return
			}
			t.Fatalf("decode: %v\n%s", err, data)
		}
		sameEvent(t, "decoded", back, ev)
		sameEvent(t, "encoding/json", &std, ev)
	})
}

// FuzzUnmarshal feeds arbitrary bytes to the decoder: it must not panic,
// and what it accepts must survive a round trip unchanged.
func FuzzUnmarshal(f *testing.F) {
	for kind := range byte(7) {
		data, _ := Marshal(randomEvent(kind, "a\"b", "c\\u00e9", 42, kind%2 == 0))
		f.Add(data)
	}
	f.Add([]byte(`{"v":1,"kind":"begin","lsn":"0/1","extra":{"a":[1,2.5e3,true,null,"\ud83d\ude00"]}}`))
	f.Add([]byte(`{"v":1,"kind":"begin","lsn":"0/1","prefix":"\ud800x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := Unmarshal(data)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T, want *DecodeError", err)
			}
			return
		}
		again, err := Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Unmarshal(again)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, again)
		}
		sameEvent(t, "round trip", back, ev)
	})
}

func TestDecodeStrings(t *testing.T) {
	cases := map[string]string{
		`"plain"`:                "plain",
		`"a\"b\\c\/d\b\f\n\r\t"`: "a\"b\\c/d\b\f\n\r\t",
		`"\u00e9\u20AC"`:         "é€",
		`"\ud83d\ude00"`:         "😀",
		`"\ud800"`:               "\uFFFD",
		`"\ud800\u0041"`:         "\uFFFDA",
		"\"caf\xc3\xa9\"":        "café",
		"\"bad\xff\"":            "bad\uFFFD",
		`"\u0000"`:               "\x00",
	}
	for in, want := range cases {
		ev, err := Unmarshal([]byte(`{"v":1,"kind":"message","lsn":"0/1","prefix":` + in + `}`))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if ev.Prefix != want {
			t.Errorf("%s: got %q, want %q", in, ev.Prefix, want)
		}
	}
	for _, bad := range []string{`"\x"`, `"\u12"`, "\"a\x01\"", `"open`} {
		if _, err := Unmarshal([]byte(`{"v":1,"kind":"message","lsn":"0/1","prefix":` + bad + `}`)); err == nil {
			t.Errorf("%s accepted", bad)
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
