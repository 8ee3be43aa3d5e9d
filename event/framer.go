package event

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Frame limits, defaults of capture.frame-max-changes and
// capture.frame-max-bytes: a fragment ends before the change that would pass
// either. Well under Pulsar's 5 MB message limit, and small enough that a
// consumer's prefetch of frames stays bounded in memory.
const (
	DefaultFrameMaxChanges = 4096
	DefaultFrameMaxBytes   = 256 << 10
)

// Field numbers of eventpb/frame.proto, for the hand-written codec: the
// capture and the apply pay it for every change, and the generated,
// reflection-driven code spent a third of the pipeline's CPU allocating a
// message per change, tuple and column (BenchmarkApplyDrain's profile).
// The encoding is byte for byte the one proto.Marshal writes (fields in
// number order, zero values left out), which the golden frames check.
const (
	fVersion      = 1
	fSystemID     = 2
	fXid          = 3
	fCommitLSN    = 4
	fEndLSN       = 5
	fCommitTime   = 6
	fOrigin       = 7
	fFragment     = 8
	fLast         = 9
	fFirstChange  = 10
	fTotalChanges = 11
	fRelations    = 12
	fChanges      = 13

	fRelSchema   = 1
	fRelTable    = 2
	fRelIdentity = 3
	fRelColumns  = 4

	fColName = 1
	fColType = 2
	fColKey  = 3

	fChOp              = 1
	fChRelation        = 2
	fChNew             = 3
	fChOld             = 4
	fChTruncate        = 5
	fChCascade         = 6
	fChRestartIdentity = 7
	fChPrefix          = 8
	fChContent         = 9

	fTupleKinds  = 1
	fTupleValues = 2
)

// Op and replica identity numbers of the .proto.
const (
	opInsert   = 1
	opUpdate   = 2
	opDelete   = 3
	opTruncate = 4
	opMessage  = 5
)

var identityNumbers = map[string]uint64{"default": 1, "index": 2, "full": 3, "nothing": 4}

// Encoded is one frame ready to publish.
type Encoded struct {
	Payload []byte
	// The frame's header, for the publisher's bookkeeping.
	LSN, EndLSN  LSN
	CommitTime   time.Time
	Fragment     int
	Last         bool
	FirstChange  int
	Changes      int
	TotalChanges int
}

// Framer turns the events of source transactions, in order, into frames:
// one per transaction, or fragments of at most maxChanges changes and about
// maxBytes bytes. It encodes each change when it is added, so the events
// can be dropped at once: a transaction of any size holds one fragment's
// bytes in memory.
type Framer struct {
	systemID             string
	maxChanges, maxBytes int

	open     bool
	lsn      LSN
	xid      uint32
	commitUs int64
	origin   string
	fragment int
	// firstChange is the position of the fragment's first change, nextSeq
	// that of the open transaction's next change.
	firstChange, nextSeq int
	changes              int
	// changeBuf holds the fragment's changes, encoded as field 13 each;
	// rels the encoded descriptions of the tables they use, in index order.
	changeBuf []byte
	scratch   []byte
	vals      []*string
	rels      [][]byte
	relBytes  int
	relIndex  map[*Column]uint32
	// described caches each table's encoded description across fragments,
	// by its Columns slice (the capture keeps one per Relation message).
	described map[*Column][]byte
	// resumeLSN and resumeFragment: the transaction whose fragments up to
	// resumeFragment are in the topic already; its next one continues the
	// numbering.
	resumeLSN      LSN
	resumeFragment int
}

// NewFramer returns a Framer for the cluster systemID; limits below 1 take
// the defaults.
func NewFramer(systemID string, maxChanges, maxBytes int) *Framer {
	if maxChanges < 1 {
		maxChanges = DefaultFrameMaxChanges
	}
	if maxBytes < 1 {
		maxBytes = DefaultFrameMaxBytes
	}
	return &Framer{systemID: systemID, maxChanges: maxChanges, maxBytes: maxBytes,
		relIndex: map[*Column]uint32{}, described: map[*Column][]byte{}}
}

// ContinueAfter says that fragments 0 to fragment of the transaction at lsn
// are published already, so that the rest of it, added next, continues
// their numbering.
func (f *Framer) ContinueAfter(lsn LSN, fragment int) {
	f.resumeLSN, f.resumeFragment = lsn, fragment
}

// Add adds the next event of the stream: BEGIN, a change, or COMMIT. The
// first event of a transaction may be any of them (a resumed capture skips
// what the topic holds). It returns a frame when one is complete: a
// fragment when the change does not fit beside the ones before it, the last
// one at COMMIT.
func (f *Framer) Add(ev *Event) (*Encoded, error) {
	if f.open && ev.LSN != f.lsn {
		return nil, fmt.Errorf("event of %s while %s is open", ev.LSN, f.lsn)
	}
	if !f.open {
		f.start(ev)
	}
	switch ev.Kind {
	case KindBegin:
		return nil, nil
	case KindCommit:
		out := f.emit(true, ev.EndLSN)
		f.open = false
		return out, nil
	}
	if ev.Seq != f.nextSeq {
		return nil, fmt.Errorf("change %d of %s follows change %d", ev.Seq, ev.LSN, f.nextSeq-1)
	}
	mark, relMark, relBytes := len(f.changeBuf), len(f.rels), f.relBytes
	if err := f.appendChange(ev); err != nil {
		f.changeBuf = f.changeBuf[:mark]
		return nil, err
	}
	var out *Encoded
	if f.changes > 0 && (f.changes >= f.maxChanges || len(f.changeBuf)+f.relBytes > f.maxBytes) {
		// It does not fit: the fragment ends before it, and the next one
		// starts with it, describing its tables anew.
		f.changeBuf = f.changeBuf[:mark]
		f.dropRelations(relMark, relBytes)
		out = f.emit(false, 0)
		f.fragment++
		if err := f.appendChange(ev); err != nil {
			return nil, err
		}
	}
	f.changes++
	f.nextSeq = ev.Seq + 1
	return out, nil
}

func (f *Framer) start(ev *Event) {
	f.open, f.lsn, f.xid, f.commitUs, f.origin, f.fragment = true, ev.LSN, ev.Xid, ev.CommitTime.UnixMicro(), ev.Origin, 0
	if ev.LSN == f.resumeLSN {
		f.fragment = f.resumeFragment + 1
	}
	f.nextSeq = max(ev.Seq, 1)
	f.firstChange = f.nextSeq
	f.reset()
}

// reset empties the fragment's changes and relations.
func (f *Framer) reset() {
	f.changeBuf = f.changeBuf[:0]
	f.changes = 0
	f.dropRelations(0, 0)
}

// dropRelations forgets the relations from index n on.
func (f *Framer) dropRelations(n, bytes int) {
	for col, i := range f.relIndex {
		if int(i) >= n {
			delete(f.relIndex, col)
		}
	}
	f.rels, f.relBytes = f.rels[:n], bytes
}

// emit encodes the open fragment and starts the next one.
func (f *Framer) emit(last bool, end LSN) *Encoded {
	total := 0
	if last {
		total = f.nextSeq - 1
	}
	size := 64 + len(f.systemID) + len(f.origin) + f.relBytes + len(f.changeBuf)
	b := make([]byte, 0, size)
	b = appendVarintField(b, fVersion, Version)
	b = appendStringField(b, fSystemID, f.systemID)
	b = appendVarintField(b, fXid, uint64(f.xid))
	b = appendVarintField(b, fCommitLSN, uint64(f.lsn))
	if last {
		b = appendVarintField(b, fEndLSN, uint64(end))
	}
	b = appendVarintField(b, fCommitTime, uint64(f.commitUs))
	b = appendStringField(b, fOrigin, f.origin)
	b = appendVarintField(b, fFragment, uint64(f.fragment))
	if last {
		b = appendVarintField(b, fLast, 1)
	}
	b = appendVarintField(b, fFirstChange, uint64(f.firstChange))
	b = appendVarintField(b, fTotalChanges, uint64(total))
	for _, r := range f.rels {
		b = protowire.AppendTag(b, fRelations, protowire.BytesType)
		b = protowire.AppendBytes(b, r)
	}
	b = append(b, f.changeBuf...)
	out := &Encoded{
		Payload: b, LSN: f.lsn, EndLSN: end, CommitTime: time.UnixMicro(f.commitUs).UTC(),
		Fragment: f.fragment, Last: last, FirstChange: f.firstChange, Changes: f.changes, TotalChanges: total,
	}
	f.firstChange = f.nextSeq
	f.reset()
	return out
}

// appendChange encodes one change into the fragment.
func (f *Framer) appendChange(ev *Event) error {
	body := f.scratch[:0]
	defer func() { f.scratch = body }()
	switch ev.Kind {
	case KindInsert, KindUpdate, KindDelete:
		op := uint64(opInsert)
		if ev.Kind == KindUpdate {
			op = opUpdate
		} else if ev.Kind == KindDelete {
			op = opDelete
		}
		rel := f.relation(TableName{ev.Schema, ev.Table}, ev.ReplicaIdentity, ev.Columns)
		body = appendVarintField(body, fChOp, op)
		body = appendVarintField(body, fChRelation, uint64(rel))
		if ev.New != nil {
			body, f.vals = appendTuple(body, fChNew, ev.Columns, ev.New, ev.Unchanged, f.vals)
		}
		if ev.Old != nil {
			body, f.vals = appendTuple(body, fChOld, ev.Columns, ev.Old, ev.OldUnchanged, f.vals)
		}
	case KindTruncate:
		body = appendVarintField(body, fChOp, opTruncate)
		var packed []byte
		for _, t := range ev.Tables {
			packed = protowire.AppendVarint(packed, uint64(f.relation(t, "", nil)))
		}
		if len(packed) > 0 {
			body = protowire.AppendTag(body, fChTruncate, protowire.BytesType)
			body = protowire.AppendBytes(body, packed)
		}
		if ev.Cascade {
			body = appendVarintField(body, fChCascade, 1)
		}
		if ev.RestartIdentity {
			body = appendVarintField(body, fChRestartIdentity, 1)
		}
	case KindMessage:
		body = appendVarintField(body, fChOp, opMessage)
		body = appendStringField(body, fChPrefix, ev.Prefix)
		if len(ev.Content) > 0 {
			body = protowire.AppendTag(body, fChContent, protowire.BytesType)
			body = protowire.AppendBytes(body, ev.Content)
		}
	default:
		return fmt.Errorf("event kind %q in a transaction", ev.Kind)
	}
	f.changeBuf = protowire.AppendTag(f.changeBuf, fChanges, protowire.BytesType)
	f.changeBuf = protowire.AppendBytes(f.changeBuf, body)
	return nil
}

// relation returns the index of the table's description in the fragment,
// adding it when missing. Changes of one table share its Columns slice, so
// the slice's first column finds it; a table named by a TRUNCATE only has
// no columns and is looked up by name.
func (f *Framer) relation(t TableName, identity string, columns []Column) uint32 {
	var id *Column
	if len(columns) > 0 {
		id = &columns[0]
		if i, ok := f.relIndex[id]; ok {
			return i
		}
	} else {
		for i, r := range f.rels {
			if s, tb := relationName(r); s == t.Schema && tb == t.Table {
				return uint32(i)
			}
		}
	}
	enc := f.described[id]
	if enc == nil || id == nil {
		enc = appendStringField(nil, fRelSchema, t.Schema)
		enc = appendStringField(enc, fRelTable, t.Table)
		ri, ok := identityNumbers[identity]
		if !ok {
			ri = identityNumbers["default"]
		}
		enc = appendVarintField(enc, fRelIdentity, ri)
		for _, c := range columns {
			col := appendStringField(nil, fColName, c.Name)
			col = appendStringField(col, fColType, c.Type)
			if c.Key {
				col = appendVarintField(col, fColKey, 1)
			}
			enc = protowire.AppendTag(enc, fRelColumns, protowire.BytesType)
			enc = protowire.AppendBytes(enc, col)
		}
		if id != nil {
			if len(f.described) > 4096 {
				clear(f.described)
			}
			f.described[id] = enc
		}
	}
	i := uint32(len(f.rels))
	f.rels = append(f.rels, enc)
	f.relBytes += len(enc) + 4
	if id != nil {
		f.relIndex[id] = i
	}
	return i
}

// relationName reads schema and table back from an encoded description.
func relationName(enc []byte) (schema, table string) {
	// The framer encoded it: it parses.
	_ = fields(enc, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
		switch {
		case typ != protowire.BytesType:
		case num == fRelSchema:
			schema = string(bs)
		case num == fRelTable:
			table = string(bs)
		}
		return nil
	})
	return schema, table
}

// appendTuple writes a row in column order as field num. A column absent
// from the row (the non-key columns of a key-only old row) is written as
// NULL, as pgoutput sends it. vals is scratch space, returned for reuse.
func appendTuple(b []byte, num protowire.Number, columns []Column, row map[string]*string, unchanged []string, vals []*string) ([]byte, []*string) {
	// The tuple's length comes first: one pass looks each column up and
	// sizes it, the next writes.
	vals = vals[:0]
	size := 0
	if len(columns) > 0 {
		size += 1 + protowire.SizeBytes(len(columns))
	}
	for _, c := range columns {
		v, ok := row[c.Name]
		switch {
		case ok && v != nil:
			size += 1 + protowire.SizeBytes(len(*v))
		case !ok && contains(unchanged, c.Name):
			v = &unchangedMark
		}
		vals = append(vals, v)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	if len(columns) > 0 {
		b = protowire.AppendTag(b, fTupleKinds, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(columns)))
		for _, v := range vals {
			switch v {
			case nil:
				b = append(b, KindNull)
			case &unchangedMark:
				b = append(b, KindUnchanged)
			default:
				b = append(b, KindText)
			}
		}
	}
	for _, v := range vals {
		if v != nil && v != &unchangedMark {
			b = protowire.AppendTag(b, fTupleValues, protowire.BytesType)
			b = protowire.AppendString(b, *v)
		}
	}
	return b, vals
}

// unchangedMark stands for an unchanged TOAST value among a tuple's values.
var unchangedMark string

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}
