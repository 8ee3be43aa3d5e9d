package event

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/event/eventpb"
)

var update = flag.Bool("update", false, "rewrite the golden frames in testdata/frames")

var (
	commitTime = time.Date(2026, 11, 30, 12, 0, 0, 123456000, time.UTC)
	items      = []Column{{Name: "id", Type: "bigint", Key: true}, {Name: "note", Type: "text"}, {Name: "doc", Type: "jsonb"}}
	fullCols   = []Column{{Name: "a", Type: "integer", Key: true}, {Name: "b", Type: "character varying(10)", Key: true}}
)

// txn builds the events of one transaction at lsn: BEGIN, changes (their
// header fields and Seq filled in), COMMIT.
func txn(lsn LSN, changes ...*Event) []*Event {
	evs := []*Event{{V: Version, Kind: KindBegin, Xid: 77, LSN: lsn, CommitTime: commitTime, Seq: 0}}
	for i, c := range changes {
		c.V, c.Xid, c.LSN, c.CommitTime, c.Seq = Version, 77, lsn, commitTime, i+1
		evs = append(evs, c)
	}
	return append(evs, &Event{V: Version, Kind: KindCommit, Xid: 77, LSN: lsn, CommitTime: commitTime, Seq: len(changes) + 1, EndLSN: lsn + 0x30, Rows: len(changes)})
}

func row(kv ...string) map[string]*string {
	m := map[string]*string{}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "<null>" {
			m[kv[i]] = nil
		} else {
			m[kv[i]] = ptr(kv[i+1])
		}
	}
	return m
}

func insert(n int) *Event {
	return &Event{Kind: KindInsert, Schema: "public", Table: "items", ReplicaIdentity: "default", Columns: items,
		New: row("id", fmt.Sprint(n), "note", fmt.Sprintf("note %d, 'quoted' \"twice\" ü", n), "doc", "<null>")}
}

// shapes are the frames docs/event-format.md describes, each with a golden
// encoding in testdata/frames: a change of the format shows in a diff.
func shapes() map[string][]*Event {
	return map[string][]*Event{
		"insert": txn(0x16B374D848, insert(1)),
		"update-unchanged-toast": txn(0x100, &Event{Kind: KindUpdate, Schema: "public", Table: "items", ReplicaIdentity: "default", Columns: items,
			New: row("id", "1", "note", ""), Unchanged: []string{"doc"}}),
		"update-key-change": txn(0x200, &Event{Kind: KindUpdate, Schema: "public", Table: "items", ReplicaIdentity: "default", Columns: items,
			New: row("id", "2", "note", "n", "doc", `{"a": [1, 2]}`), Old: row("id", "1")}),
		"delete-key-only": txn(0x300, &Event{Kind: KindDelete, Schema: "public", Table: "items", ReplicaIdentity: "default", Columns: items, Old: row("id", "5")}),
		"delete-full": txn(0x400, &Event{Kind: KindDelete, Schema: "odd schema", Table: `We"ird`, ReplicaIdentity: "full", Columns: fullCols,
			Old: row("a", "1", "b", "<null>")}),
		"truncate": txn(0x500, &Event{Kind: KindTruncate, Tables: []TableName{{"public", "items"}, {"odd schema", `We"ird`}}, Cascade: true, RestartIdentity: true}),
		"message":  txn(0x600, &Event{Kind: KindMessage, Prefix: "pgtandem.marker", Content: []byte{0, 1, 2, 0xff}}),
		"mixed":    txn(0x700, insert(1), insert(2), &Event{Kind: KindDelete, Schema: "odd schema", Table: `We"ird`, ReplicaIdentity: "full", Columns: fullCols, Old: row("a", "1", "b", "x")}, insert(3)),
		"empty":    txn(0x800),
		"origin":   withOrigin("pg_16394", txn(0x900, insert(4))),
	}
}

// withOrigin marks a transaction as one that came in under a replication
// origin on the source (a native subscription's, say).
func withOrigin(origin string, evs []*Event) []*Event {
	for _, ev := range evs {
		ev.Origin = origin
	}
	return evs
}

// frames runs events through a Framer with the given limits.
func frames(t testing.TB, f *Framer, evs []*Event) []*Encoded {
	t.Helper()
	var out []*Encoded
	for _, ev := range evs {
		enc, err := f.Add(ev)
		if err != nil {
			t.Fatalf("add %s %d: %v", ev.Kind, ev.Seq, err)
		}
		if enc != nil {
			out = append(out, enc)
		}
	}
	return out
}

// expand decodes frames back into the events of their transactions.
func expand(t testing.TB, encs []*Encoded) []*Event {
	t.Helper()
	var evs []*Event
	for i, enc := range encs {
		f, err := DecodeFrame(enc.Payload)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.SystemID != "7321" || f.Fragment != enc.Fragment || f.Last != enc.Last || f.LSN != enc.LSN {
			t.Fatalf("frame %d header %+v, encoded as %+v", i, f, enc)
		}
		evs = append(evs, f.Events()...)
	}
	return evs
}

func TestGoldenFrames(t *testing.T) {
	for name, evs := range shapes() {
		t.Run(name, func(t *testing.T) {
			encs := frames(t, NewFramer("7321", 0, 0), evs)
			if len(encs) != 1 {
				t.Fatalf("%d frames, want 1", len(encs))
			}
			sameEvents(t, expand(t, encs), evs)
			path := filepath.Join("testdata", "frames", name+".bin")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, encs[0].Payload, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./event -run Golden -update once a format change is intended)", err)
			}
			if !bytes.Equal(golden, encs[0].Payload) {
				t.Fatalf("the encoding of %s changed: a format change for every consumer (docs/event-format.md); if intended, rerun with -update", name)
			}
			// The golden bytes decode as well: a consumer built today reads
			// what an older capture wrote.
			f, err := DecodeFrame(golden)
			if err != nil {
				t.Fatal(err)
			}
			sameEvents(t, f.Events(), evs)
		})
	}
}

// sameEvents compares events as a consumer sees them; Columns and rows by
// value.
func sameEvents(t testing.TB, got, want []*Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := *got[i], *want[i]
		if len(w.Columns) == 0 {
			w.Columns = nil
		}
		if len(g.Columns) == 0 {
			g.Columns = nil
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("event %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestFragments(t *testing.T) {
	var changes []*Event
	for i := range 10 {
		changes = append(changes, insert(i))
	}
	evs := txn(0x900, changes...)
	for _, c := range []struct {
		name                 string
		maxChanges, maxBytes int
		want                 []int // changes per fragment
	}{
		{"by changes", 4, 1 << 20, []int{4, 4, 2}},
		{"by bytes", 100, 200, nil},
		{"one change larger than the limit", 100, 10, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"exact", 10, 1 << 20, []int{10}},
	} {
		t.Run(c.name, func(t *testing.T) {
			encs := frames(t, NewFramer("7321", c.maxChanges, c.maxBytes), evs)
			var got []int
			for i, e := range encs {
				got = append(got, e.Changes)
				if e.Fragment != i || e.Last != (i == len(encs)-1) {
					t.Fatalf("fragment %d: number %d, last %v", i, e.Fragment, e.Last)
				}
				if e.Last && (e.TotalChanges != 10 || e.EndLSN != 0x930) {
					t.Fatalf("last fragment: total %d, end %s", e.TotalChanges, e.EndLSN)
				}
				if !e.Last && e.EndLSN != 0 {
					t.Fatalf("fragment %d knows the end LSN", i)
				}
			}
			if c.want == nil {
				// By bytes: every fragment of several changes stays within
				// the limit (plus its header), and the next change would
				// not have fit.
				if len(encs) < 2 {
					t.Fatalf("%d fragments under a 200-byte limit", len(encs))
				}
				for i, e := range encs {
					if e.Changes > 1 && len(e.Payload) > c.maxBytes+64 {
						t.Fatalf("fragment %d: %d changes in %d bytes", i, e.Changes, len(e.Payload))
					}
				}
			} else if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("changes per fragment %v, want %v", got, c.want)
			}
			sameEvents(t, expand(t, encs), evs)
		})
	}
}

// TestResumeContinues: a capture restarted in the middle of a transaction
// publishes the rest of it with the fragment numbers and positions that
// follow what the topic holds.
func TestResumeContinues(t *testing.T) {
	var changes []*Event
	for i := range 6 {
		changes = append(changes, insert(i))
	}
	evs := txn(0xA00, changes...)
	whole := frames(t, NewFramer("7321", 2, 1<<20), evs)
	if len(whole) != 3 {
		t.Fatalf("%d fragments", len(whole))
	}
	// The first fragment (changes 1 and 2) is in the topic.
	f := NewFramer("7321", 2, 1<<20)
	f.ContinueAfter(0xA00, 0)
	rest := frames(t, f, evs[3:])
	if len(rest) != 2 || !bytes.Equal(rest[0].Payload, whole[1].Payload) || !bytes.Equal(rest[1].Payload, whole[2].Payload) {
		t.Fatalf("resumed fragments differ from the uninterrupted ones: %+v", rest)
	}
	// Every change is in the topic, only the COMMIT is missing.
	f = NewFramer("7321", 2, 1<<20)
	f.ContinueAfter(0xA00, 2)
	tail := frames(t, f, evs[7:])
	last, err := DecodeFrame(tail[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != 1 || !last.Last || last.Fragment != 3 || last.TotalChanges != 6 || len(last.Changes) != 0 || last.FirstChange != 7 {
		t.Fatalf("commit-only fragment %+v", last)
	}
}

func TestFramerRefuses(t *testing.T) {
	f := NewFramer("1", 0, 0)
	if _, err := f.Add(&Event{Kind: KindBegin, LSN: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Add(&Event{Kind: KindInsert, LSN: 2, Seq: 1}); err == nil {
		t.Fatal("an event of another transaction was accepted inside an open one")
	}
	if _, err := f.Add(&Event{Kind: KindInsert, LSN: 1, Seq: 2, Table: "t", Columns: items}); err == nil {
		t.Fatal("a gap in the changes was accepted")
	}
	if _, err := f.Add(&Event{Kind: "upsert", LSN: 1, Seq: 1}); err == nil {
		t.Fatal("an unknown kind was accepted")
	}
}

func encode(t testing.TB, pb *eventpb.Frame) []byte {
	t.Helper()
	b, err := proto.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRefuses(t *testing.T) {
	good := func() *eventpb.Frame {
		return &eventpb.Frame{FormatVersion: 2, CommitLsn: 16, EndLsn: 32, FirstChange: 1, LastFragment: true, TotalChanges: 1,
			Relations: []*eventpb.Relation{{Schema: "s", Table: "t", ReplicaIdentity: eventpb.ReplicaIdentity_REPLICA_IDENTITY_DEFAULT,
				Columns: []*eventpb.Column{{Name: "id", Type: "integer", Key: true}}}},
			Changes: []*eventpb.Change{{Op: eventpb.Op_OP_INSERT, New: &eventpb.Tuple{Kinds: []byte("t"), Values: [][]byte{[]byte("1")}}}}}
	}
	if _, err := DecodeFrame(encode(t, good())); err != nil {
		t.Fatalf("the base case fails: %v", err)
	}
	cases := map[string]func(*eventpb.Frame){
		"no commit lsn":        func(f *eventpb.Frame) { f.CommitLsn = 0 },
		"last, no end lsn":     func(f *eventpb.Frame) { f.EndLsn = 0 },
		"no first change":      func(f *eventpb.Frame) { f.FirstChange = 0 },
		"first fragment later": func(f *eventpb.Frame) { f.FirstChange, f.TotalChanges = 5, 5 },
		"total disagrees":      func(f *eventpb.Frame) { f.TotalChanges = 3 },
		"unknown op":           func(f *eventpb.Frame) { f.Changes[0].Op = 42 },
		"relation out of":      func(f *eventpb.Frame) { f.Changes[0].Relation = 1 },
		"insert without row":   func(f *eventpb.Frame) { f.Changes[0].New = nil },
		"insert with old row":  func(f *eventpb.Frame) { f.Changes[0].Old = f.Changes[0].New },
		"delete without old":   func(f *eventpb.Frame) { f.Changes[0].Op = eventpb.Op_OP_DELETE },
		"too few kinds":        func(f *eventpb.Frame) { f.Changes[0].New.Kinds = nil },
		"unknown kind":         func(f *eventpb.Frame) { f.Changes[0].New.Kinds = []byte("b") },
		"value missing":        func(f *eventpb.Frame) { f.Changes[0].New.Values = nil },
		"value too many":       func(f *eventpb.Frame) { f.Changes[0].New.Kinds = []byte("n") },
		"relation, no name":    func(f *eventpb.Frame) { f.Relations[0].Table = "" },
		"column, no type":      func(f *eventpb.Frame) { f.Relations[0].Columns[0].Type = "" },
		"unknown identity":     func(f *eventpb.Frame) { f.Relations[0].ReplicaIdentity = 9 },
		"truncate, no tables":  func(f *eventpb.Frame) { f.Changes[0] = &eventpb.Change{Op: eventpb.Op_OP_TRUNCATE} },
		"truncate out of": func(f *eventpb.Frame) {
			f.Changes[0] = &eventpb.Change{Op: eventpb.Op_OP_TRUNCATE, TruncateRelations: []uint32{3}}
		},
		"no format version":    func(f *eventpb.Frame) { f.FormatVersion = 0 },
		"unspecified op":       func(f *eventpb.Frame) { f.Changes[0].Op = eventpb.Op_OP_UNSPECIFIED },
		"identity unspecified": func(f *eventpb.Frame) { f.Relations[0].ReplicaIdentity = 0 },
	}
	for name, breakIt := range cases {
		pb := good()
		breakIt(pb)
		_, err := DecodeFrame(encode(t, pb))
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: err = %v, want *DecodeError", name, err)
		}
	}
	for name, payload := range map[string][]byte{"not protobuf": []byte("\xff\xff\xff"), "format 1 JSON": []byte(`{"v":1,"kind":"begin","lsn":"0/1"}`)} {
		var de *DecodeError
		if _, err := DecodeFrame(payload); !errors.As(err, &de) {
			t.Errorf("%s: err = %v, want *DecodeError", name, err)
		}
	}
	future := good()
	future.FormatVersion = 3
	var ve *VersionError
	if _, err := DecodeFrame(encode(t, future)); !errors.As(err, &ve) || ve.Version != 3 || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("format 3: err = %v, want *VersionError naming it", err)
	}
}

// FuzzDecodeFrame: no input makes the decoder panic, and whatever it accepts
// survives encoding again unchanged.
func FuzzDecodeFrame(f *testing.F) {
	for _, evs := range shapes() {
		for _, enc := range frames(f, NewFramer("7321", 2, 1<<20), evs) {
			f.Add(enc.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		fr, err := DecodeFrame(payload)
		if err != nil {
			return
		}
		// What the hand-written decoder accepts, code generated from the
		// .proto reads the same way.
		var pb eventpb.Frame
		if err := proto.Unmarshal(payload, &pb); err != nil {
			t.Fatalf("accepted a frame protobuf refuses: %v", err)
		}
		if pb.CommitLsn != uint64(fr.LSN) || pb.Xid != fr.Xid || pb.SystemId != fr.SystemID || int(pb.FirstChange) != fr.FirstChange || len(pb.Changes) != len(fr.Changes) || pb.LastFragment != fr.Last {
			t.Fatalf("generated code reads %v, the decoder %+v", &pb, fr.Header)
		}
		framer := NewFramer(fr.SystemID, len(fr.Changes)+1, 1<<30)
		framer.ContinueAfter(fr.LSN, fr.Fragment-1)
		evs := fr.Events()
		if !fr.Last {
			// Close the transaction so the framer emits it.
			evs = append(evs, &Event{Kind: KindCommit, LSN: fr.LSN, Xid: fr.Xid, CommitTime: fr.CommitTime, Origin: fr.Origin, EndLSN: 1, Seq: fr.FirstChange + len(fr.Changes)})
		}
		var out []*Encoded
		for _, ev := range evs {
			enc, err := framer.Add(ev)
			if err != nil {
				t.Fatalf("re-encoding an accepted frame: %v", err)
			}
			if enc != nil {
				out = append(out, enc)
			}
		}
		if len(out) != 1 {
			t.Fatalf("re-encoding gave %d frames", len(out))
		}
		back, err := DecodeFrame(out[0].Payload)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if len(back.Changes) != len(fr.Changes) {
			t.Fatalf("%d changes back, had %d", len(back.Changes), len(fr.Changes))
		}
		for i := range fr.Changes {
			g, w := *back.Changes[i], *fr.Changes[i]
			// Relations are described anew and columns compared by value.
			if !reflect.DeepEqual(g.New, w.New) || !reflect.DeepEqual(g.Old, w.Old) || g.Kind != w.Kind || g.Table != w.Table || g.Seq != w.Seq {
				t.Fatalf("change %d changed: %+v, was %+v", i, g, w)
			}
		}
	})
}
