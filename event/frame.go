package event

import (
	"bytes"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Frame is one message of a topic: a whole source transaction, or one
// fragment of a transaction larger than the capture's frame limits. Every
// fragment carries the transaction's header.
type Frame struct {
	Header
	// Changes are the frame's row changes, truncates and logical decoding
	// messages, in source order, each with the header's Xid, LSN,
	// CommitTime and Origin and its position in Seq.
	Changes []*Event
}

// Header is what every fragment of a transaction tells about it.
type Header struct {
	// SystemID is the source cluster's system identifier, in decimal.
	SystemID string
	// Xid is the source transaction id.
	Xid uint32
	// LSN is the transaction's commit LSN, the same in every fragment.
	LSN LSN
	// EndLSN is the end of the commit record; set on the last fragment
	// only, since pgoutput tells it with the COMMIT, after every change.
	EndLSN LSN
	// CommitTime is when the source transaction committed (microseconds).
	CommitTime time.Time
	// Origin is the replication origin the transaction came in under on the
	// source, "" for a client's transaction.
	Origin string
	// Fragment numbers the transaction's fragments from 0; Last marks its
	// last one.
	Fragment int
	Last     bool
	// FirstChange is the position in the transaction, from 1, of the first
	// of Changes (of the next change when there is none); TotalChanges the
	// transaction's number of changes, set on the last fragment.
	FirstChange  int
	TotalChanges int
}

// VersionError reports a frame of a format version this build does not read.
type VersionError struct {
	Version uint32
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("event format version %d, this build reads version %d (upgrade the consumer)", e.Version, Version)
}

// Events expands the frame into the order a transaction is applied in: a
// BEGIN event if it is the transaction's first fragment, its changes, and a
// COMMIT event (with EndLSN and Rows) if it is the last.
func (f *Frame) Events() []*Event {
	out := make([]*Event, 0, len(f.Changes)+2)
	if f.Fragment == 0 {
		out = append(out, f.envelope(KindBegin, 0))
	}
	out = append(out, f.Changes...)
	if f.Last {
		c := f.envelope(KindCommit, f.TotalChanges+1)
		c.EndLSN, c.Rows = f.EndLSN, f.TotalChanges
		out = append(out, c)
	}
	return out
}

func (f *Frame) envelope(kind Kind, seq int) *Event {
	return &Event{V: Version, Kind: kind, Xid: f.Xid, LSN: f.LSN, CommitTime: f.CommitTime, Origin: f.Origin, Seq: seq}
}

// DecodeFrame decodes one message payload. A payload that is not a frame of
// this format is a *DecodeError, one of another format version a
// *VersionError; nothing of it is returned then.
func DecodeFrame(payload []byte) (*Frame, error) { return NewDecoder().Decode(payload) }

// Decoder decodes frames one after the other, keeping the tables that recent
// frames described: every frame repeats the descriptions of its tables, and
// a stream of frames is read faster when each is parsed once. A Decoder is
// not safe for concurrent use.
type Decoder struct {
	// relations by their encoded description.
	relations map[string]*relation
	// raw is the last frame's parts, its slices reused for the next.
	raw rawFrame
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{relations: map[string]*relation{}} }

// Decode decodes one message payload, as DecodeFrame.
func (d *Decoder) Decode(payload []byte) (*Frame, error) {
	d.raw.relations, d.raw.changes = d.raw.relations[:0], d.raw.changes[:0]
	raw, err := parseFrame(payload, d.raw)
	d.raw = raw
	if err != nil {
		return nil, err
	}
	// The frame's values are substrings of one copy of it, made here once.
	ft := frameText{payload: payload, text: string(payload)}
	f := &Frame{Header: raw.header}
	rels := make([]*relation, len(raw.relations))
	for i, b := range raw.relations {
		if rels[i], err = d.relation(b); err != nil {
			return nil, &DecodeError{Reason: fmt.Sprintf("relation %d: %s", i, err)}
		}
	}
	// The frame's events are allocated together, as they live together.
	f.Changes = make([]*Event, len(raw.changes))
	evs := make([]Event, len(raw.changes))
	for i, b := range raw.changes {
		ev := &evs[i]
		if err := decodeChange(ev, f, rels, ft, b); err != nil {
			return nil, &DecodeError{Reason: fmt.Sprintf("change %d of %s: %s", f.FirstChange+i, f.LSN, err)}
		}
		ev.Seq = f.FirstChange + i
		f.Changes[i] = ev
	}
	return f, nil
}

// DecodeHeader decodes only a payload's header and tells how many changes
// the frame holds, without checking them: where a capture resumes after
// the topic's last frame, even one a consumer cannot apply.
func DecodeHeader(payload []byte) (Header, int, error) {
	raw, err := parseFrame(payload, rawFrame{})
	return raw.header, len(raw.changes), err
}

// rawFrame is a frame split into its fields: the header decoded, the
// relations and changes still encoded.
type rawFrame struct {
	header             Header
	relations, changes [][]byte
}

// parseFrame reads the top level of a frame and checks the header; raw's
// slices, empty, are appended to.
func parseFrame(b []byte, raw rawFrame) (rawFrame, error) {
	raw.header = Header{}
	var version, commitUs uint64
	h := &raw.header
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		want := protowire.VarintType
		switch num {
		case fVersion:
			version = v
		case fXid:
			h.Xid = uint32(v)
		case fCommitLSN:
			h.LSN = LSN(v)
		case fEndLSN:
			h.EndLSN = LSN(v)
		case fCommitTime:
			commitUs = v
		case fFragment:
			h.Fragment = int(uint32(v))
		case fLast:
			h.Last = v != 0
		case fFirstChange:
			h.FirstChange = int(uint32(v))
		case fTotalChanges:
			h.TotalChanges = int(uint32(v))
		case fSystemID, fOrigin:
			want = protowire.BytesType
			if !utf8.Valid(bs) {
				return fmt.Errorf("field %d (not UTF-8)", num)
			}
			if num == fSystemID {
				h.SystemID = string(bs)
			} else {
				h.Origin = string(bs)
			}
		case fRelations:
			want = protowire.BytesType
			raw.relations = append(raw.relations, bs)
		case fChanges:
			want = protowire.BytesType
			raw.changes = append(raw.changes, bs)
		default:
			// A field of a later minor revision: skipped, as protobuf does.
			return nil
		}
		if typ != want {
			return fmt.Errorf("field %d (wire type %d)", num, typ)
		}
		return nil
	})
	if err != nil {
		return raw, &DecodeError{Reason: "not a protobuf frame: " + err.Error()}
	}
	h.CommitTime = time.UnixMicro(int64(commitUs)).UTC()
	if version != Version {
		if version == 0 {
			return raw, &DecodeError{Reason: "no format version (not a pgtandem frame?)"}
		}
		return raw, &VersionError{Version: uint32(version)}
	}
	switch {
	case h.LSN == 0:
		return raw, &DecodeError{Reason: "frame without commit_lsn"}
	case h.Last && h.EndLSN == 0:
		return raw, &DecodeError{Reason: "last fragment without end_lsn"}
	case h.FirstChange < 1:
		return raw, &DecodeError{Reason: "frame without first_change"}
	case h.Fragment == 0 && h.FirstChange != 1:
		return raw, &DecodeError{Reason: fmt.Sprintf("first fragment starts at change %d", h.FirstChange)}
	case h.Last && h.TotalChanges != h.FirstChange+len(raw.changes)-1:
		return raw, &DecodeError{Reason: fmt.Sprintf("last fragment says %d changes, holds changes %d to %d", h.TotalChanges, h.FirstChange, h.FirstChange+len(raw.changes)-1)}
	}
	return raw, nil
}

// fields calls field for every field of an encoded message, with its
// varint value or its bytes; a wire type other than varint or bytes, or a
// field of the wrong one, is an error.
func fields(b []byte, field func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad tag")
		}
		b = b[n:]
		var v uint64
		var bs []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			bs, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("bad field %d", num)
		}
		b = b[n:]
		if err := field(num, typ, v, bs); err != nil {
			return err
		}
	}
	return nil
}

// text is a string field's value, checked to be UTF-8 as protobuf requires.
func text(typ protowire.Type, bs []byte, what string) (string, error) {
	if typ != protowire.BytesType || !utf8.Valid(bs) {
		return "", fmt.Errorf("%s is not a UTF-8 string", what)
	}
	return string(bs), nil
}

// relation is a decoded Relation: its columns are shared by every event
// that changes the table.
type relation struct {
	schema, table, identity string
	columns                 []Column
}

var identityNames = map[uint64]string{1: "default", 2: "index", 3: "full", 4: "nothing"}

// relation decodes a table's description, or finds it decoded already.
func (d *Decoder) relation(b []byte) (*relation, error) {
	if rel, ok := d.relations[string(b)]; ok {
		return rel, nil
	}
	rel := &relation{}
	var identity uint64
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		var err error
		switch num {
		case fRelSchema:
			rel.schema, err = text(typ, bs, "schema")
		case fRelTable:
			rel.table, err = text(typ, bs, "table")
		case fRelIdentity:
			identity = v
		case fRelColumns:
			if typ != protowire.BytesType {
				return fmt.Errorf("column of wire type %d", typ)
			}
			var c Column
			err = fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
				var err error
				switch num {
				case fColName:
					c.Name, err = text(typ, bs, "column name")
				case fColType:
					c.Type, err = text(typ, bs, "column type")
				case fColKey:
					c.Key = v != 0
				}
				return err
			})
			if err == nil && (c.Name == "" || c.Type == "") {
				err = fmt.Errorf("%s.%s: column %d without name or type", rel.schema, rel.table, len(rel.columns))
			}
			rel.columns = append(rel.columns, c)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	rel.identity = identityNames[identity]
	switch {
	case rel.table == "":
		return nil, fmt.Errorf("no table name")
	case rel.identity == "":
		return nil, fmt.Errorf("%s.%s: unknown replica identity %d", rel.schema, rel.table, identity)
	}
	if d.relations != nil {
		if len(d.relations) > 4096 {
			clear(d.relations)
		}
		d.relations[string(b)] = rel
	}
	return rel, nil
}

// rawChange is a change split into its fields.
type rawChange struct {
	op, rel          uint64
	newRow, oldRow   []byte
	hasNew, hasOld   bool
	truncate         []uint64
	cascade, restart bool
	prefix           string
	content          []byte
}

// decodeChange decodes one change into ev.
func decodeChange(ev *Event, f *Frame, rels []*relation, ft frameText, b []byte) error {
	var c rawChange
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		var err error
		switch num {
		case fChOp:
			c.op = v
		case fChRelation:
			c.rel = uint64(uint32(v))
		case fChNew:
			c.newRow, c.hasNew = bs, true
		case fChOld:
			c.oldRow, c.hasOld = bs, true
		case fChTruncate:
			if typ == protowire.VarintType {
				c.truncate = append(c.truncate, uint64(uint32(v)))
				return nil
			}
			for len(bs) > 0 {
				v, n := protowire.ConsumeVarint(bs)
				if n < 0 {
					return fmt.Errorf("bad truncate_relations")
				}
				c.truncate, bs = append(c.truncate, uint64(uint32(v))), bs[n:]
			}
		case fChCascade:
			c.cascade = v != 0
		case fChRestartIdentity:
			c.restart = v != 0
		case fChPrefix:
			c.prefix, err = text(typ, bs, "prefix")
		case fChContent:
			c.content = bytes.Clone(bs)
		}
		return err
	})
	if err != nil {
		return err
	}
	*ev = Event{V: Version, Xid: f.Xid, LSN: f.LSN, CommitTime: f.CommitTime, Origin: f.Origin}
	switch c.op {
	case opTruncate:
		ev.Kind, ev.Cascade, ev.RestartIdentity = KindTruncate, c.cascade, c.restart
		if len(c.truncate) == 0 {
			return fmt.Errorf("truncate without tables")
		}
		for _, i := range c.truncate {
			if i >= uint64(len(rels)) {
				return fmt.Errorf("truncate of relation %d, frame describes %d", i, len(rels))
			}
			ev.Tables = append(ev.Tables, TableName{Schema: rels[i].schema, Table: rels[i].table})
		}
		return nil
	case opMessage:
		ev.Kind, ev.Prefix, ev.Content = KindMessage, c.prefix, c.content
		return nil
	case opInsert:
		ev.Kind = KindInsert
	case opUpdate:
		ev.Kind = KindUpdate
	case opDelete:
		ev.Kind = KindDelete
	default:
		return fmt.Errorf("unknown op %d", c.op)
	}
	if c.rel >= uint64(len(rels)) {
		return fmt.Errorf("%s of relation %d, frame describes %d", ev.Kind, c.rel, len(rels))
	}
	rel := rels[c.rel]
	ev.Schema, ev.Table, ev.ReplicaIdentity, ev.Columns = rel.schema, rel.table, rel.identity, rel.columns
	switch {
	case ev.Kind != KindDelete && !c.hasNew:
		return fmt.Errorf("%s without new row", ev.Kind)
	case ev.Kind == KindDelete && !c.hasOld:
		return fmt.Errorf("delete without old row")
	case ev.Kind == KindInsert && c.hasOld, ev.Kind == KindDelete && c.hasNew:
		return fmt.Errorf("%s with a row it cannot have", ev.Kind)
	}
	if c.hasNew {
		if ev.New, ev.Unchanged, err = decodeTuple(rel, ft, c.newRow, false); err != nil {
			return fmt.Errorf("new row: %w", err)
		}
	}
	if c.hasOld {
		if ev.Old, ev.OldUnchanged, err = decodeTuple(rel, ft, c.oldRow, rel.identity != "full"); err != nil {
			return fmt.Errorf("old row: %w", err)
		}
	}
	return nil
}

// frameText is a frame's payload and one string copy of it, which the
// values of its rows share.
type frameText struct {
	payload []byte
	text    string
}

// of returns the string of bs, which lies inside the payload: the
// difference of their capacities is its offset.
func (t frameText) of(bs []byte) string {
	off := cap(t.payload) - cap(bs)
	return t.text[off : off+len(bs)]
}

// decodeTuple reads a tuple into a row by column name; keyOnly keeps only
// the key columns (the others of a key-only old row are NULL placeholders).
// Its values are substrings of the frame's text.
func decodeTuple(rel *relation, ft frameText, b []byte, keyOnly bool) (map[string]*string, []string, error) {
	var kinds string
	values := make([]string, 0, len(rel.columns))
	err := fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
		if typ != protowire.BytesType || (num != fTupleKinds && num != fTupleValues) {
			return nil
		}
		v := ft.of(bs)
		if num == fTupleKinds {
			kinds = v
		} else {
			values = append(values, v)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(kinds) != len(rel.columns) {
		return nil, nil, fmt.Errorf("%d column kinds for %d columns of %s.%s", len(kinds), len(rel.columns), rel.schema, rel.table)
	}
	row := make(map[string]*string, len(rel.columns))
	var unchanged []string
	next := 0
	for i := range len(kinds) {
		k, c := kinds[i], rel.columns[i]
		switch k {
		case KindNull, KindUnchanged, KindText:
		default:
			return nil, nil, fmt.Errorf("column %s: unknown value kind %q", c.Name, k)
		}
		if k == KindText {
			if next >= len(values) {
				return nil, nil, fmt.Errorf("column %s: value missing (%d values)", c.Name, len(values))
			}
			next++
		}
		if keyOnly && !c.Key {
			continue
		}
		switch k {
		case KindNull:
			row[c.Name] = nil
		case KindUnchanged:
			unchanged = append(unchanged, c.Name)
		case KindText:
			row[c.Name] = &values[next-1]
		}
	}
	if next != len(values) {
		return nil, nil, fmt.Errorf("%d values for %d text columns", len(values), next)
	}
	return row, unchanged, nil
}

// The kinds of a tuple's column, as in pgoutput's TupleData.
const (
	KindNull      = 'n'
	KindUnchanged = 'u'
	KindText      = 't'
)
