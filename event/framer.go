package event

import (
	"fmt"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/event/eventpb"
)

// Frame limits, defaults of capture.frame-max-changes and
// capture.frame-max-bytes: a fragment ends before the change that would pass
// either. Well under Pulsar's 5 MB message limit, and small enough that a
// consumer's prefetch of frames stays bounded in memory.
const (
	DefaultFrameMaxChanges = 4096
	DefaultFrameMaxBytes   = 256 << 10
)

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
// maxBytes bytes. It converts each change when it is added, so the events
// can be dropped at once: a transaction of any size holds one fragment in
// memory.
type Framer struct {
	systemID             string
	maxChanges, maxBytes int

	open     bool
	lsn      LSN
	fragment int
	// nextSeq is the position of the next change of the open transaction.
	nextSeq int
	pb      eventpb.Frame
	bytes   int
	rels    map[*Column]uint32
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
	return &Framer{systemID: systemID, maxChanges: maxChanges, maxBytes: maxBytes, rels: map[*Column]uint32{}}
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
		f.pb.EndLsn = uint64(ev.EndLSN)
		f.pb.LastFragment = true
		f.pb.TotalChanges = uint32(f.nextSeq - 1)
		out, err := f.emit()
		f.open = false
		return out, err
	}
	c, size, err := f.change(ev)
	if err != nil {
		return nil, err
	}
	var out *Encoded
	if len(f.pb.Changes) > 0 && (len(f.pb.Changes) >= f.maxChanges || f.bytes+size > f.maxBytes) {
		if out, err = f.emit(); err != nil {
			return nil, err
		}
		f.fragment++
		f.pb.Fragment = uint32(f.fragment)
		// The new fragment describes its relations anew.
		c, size, err = f.change(ev)
		if err != nil {
			return nil, err
		}
	}
	f.pb.Changes = append(f.pb.Changes, c)
	f.bytes += size
	f.nextSeq = ev.Seq + 1
	return out, nil
}

func (f *Framer) start(ev *Event) {
	f.open, f.lsn, f.fragment = true, ev.LSN, 0
	if ev.LSN == f.resumeLSN {
		f.fragment = f.resumeFragment + 1
	}
	f.nextSeq = max(ev.Seq, 1)
	f.pb = eventpb.Frame{
		FormatVersion: Version,
		SystemId:      f.systemID,
		Xid:           ev.Xid,
		CommitLsn:     uint64(ev.LSN),
		CommitTimeUs:  ev.CommitTime.UnixMicro(),
		Origin:        ev.Origin,
		Fragment:      uint32(f.fragment),
		FirstChange:   uint32(f.nextSeq),
	}
	f.reset()
}

// reset empties the fragment's changes and relations.
func (f *Framer) reset() {
	f.pb.Changes, f.pb.Relations = nil, nil
	f.bytes = 0
	clear(f.rels)
}

// emit encodes the open fragment and starts the next one.
func (f *Framer) emit() (*Encoded, error) {
	payload, err := proto.Marshal(&f.pb)
	if err != nil {
		return nil, fmt.Errorf("encode frame of %s: %w", f.lsn, err)
	}
	out := &Encoded{
		Payload: payload, LSN: f.lsn, EndLSN: LSN(f.pb.EndLsn), CommitTime: time.UnixMicro(f.pb.CommitTimeUs).UTC(),
		Fragment: f.fragment, Last: f.pb.LastFragment, FirstChange: int(f.pb.FirstChange), Changes: len(f.pb.Changes),
		TotalChanges: int(f.pb.TotalChanges),
	}
	f.pb.FirstChange = uint32(f.nextSeq)
	f.reset()
	return out, nil
}

// change converts one change and tells about how many bytes it adds to the
// frame, its relation's description included when the frame lacks it.
func (f *Framer) change(ev *Event) (*eventpb.Change, int, error) {
	if ev.Seq != f.nextSeq {
		return nil, 0, fmt.Errorf("change %d of %s follows change %d", ev.Seq, ev.LSN, f.nextSeq-1)
	}
	c := &eventpb.Change{}
	size := 8
	switch ev.Kind {
	case KindInsert, KindUpdate, KindDelete:
		c.Op = map[Kind]eventpb.Op{KindInsert: eventpb.Op_OP_INSERT, KindUpdate: eventpb.Op_OP_UPDATE, KindDelete: eventpb.Op_OP_DELETE}[ev.Kind]
		rel, n := f.relation(TableName{ev.Schema, ev.Table}, ev.ReplicaIdentity, ev.Columns)
		c.Relation, size = rel, size+n
		if ev.New != nil {
			c.New = tuple(ev.Columns, ev.New, ev.Unchanged, &size)
		}
		if ev.Old != nil {
			c.Old = tuple(ev.Columns, ev.Old, ev.OldUnchanged, &size)
		}
	case KindTruncate:
		c.Op, c.Cascade, c.RestartIdentity = eventpb.Op_OP_TRUNCATE, ev.Cascade, ev.RestartIdentity
		for _, t := range ev.Tables {
			rel, n := f.relation(t, "", nil)
			c.TruncateRelations = append(c.TruncateRelations, rel)
			size += n + 4
		}
	case KindMessage:
		c.Op, c.Prefix, c.Content = eventpb.Op_OP_MESSAGE, ev.Prefix, ev.Content
		size += len(ev.Prefix) + len(ev.Content)
	default:
		return nil, 0, fmt.Errorf("event kind %q in a transaction", ev.Kind)
	}
	return c, size, nil
}

var identities = map[string]eventpb.ReplicaIdentity{
	"default": eventpb.ReplicaIdentity_REPLICA_IDENTITY_DEFAULT,
	"index":   eventpb.ReplicaIdentity_REPLICA_IDENTITY_INDEX,
	"full":    eventpb.ReplicaIdentity_REPLICA_IDENTITY_FULL,
	"nothing": eventpb.ReplicaIdentity_REPLICA_IDENTITY_NOTHING,
}

// relation returns the index of the table's description in the fragment,
// adding it when missing, and the bytes it added. Changes of one table
// share its Columns slice (the capture keeps one per Relation message), so
// the slice's first column finds it; a table named by a TRUNCATE only has
// no columns.
func (f *Framer) relation(t TableName, identity string, columns []Column) (uint32, int) {
	var id *Column
	if len(columns) > 0 {
		id = &columns[0]
		if i, ok := f.rels[id]; ok {
			return i, 0
		}
	} else {
		for i, r := range f.pb.Relations {
			if r.Schema == t.Schema && r.Table == t.Table {
				return uint32(i), 0
			}
		}
	}
	ri, ok := identities[identity]
	if !ok {
		ri = eventpb.ReplicaIdentity_REPLICA_IDENTITY_DEFAULT
	}
	r := &eventpb.Relation{Schema: t.Schema, Table: t.Table, ReplicaIdentity: ri}
	size := len(t.Schema) + len(t.Table) + 8
	for _, c := range columns {
		r.Columns = append(r.Columns, &eventpb.Column{Name: c.Name, Type: c.Type, Key: c.Key})
		size += len(c.Name) + len(c.Type) + 6
	}
	i := uint32(len(f.pb.Relations))
	f.pb.Relations = append(f.pb.Relations, r)
	if id != nil {
		f.rels[id] = i
	}
	return i, size
}

// tuple writes a row in column order. A column absent from the row (the
// non-key columns of a key-only old row) is written as NULL, as pgoutput
// sends it.
func tuple(columns []Column, row map[string]*string, unchanged []string, size *int) *eventpb.Tuple {
	t := &eventpb.Tuple{Kinds: make([]byte, len(columns))}
	for i, c := range columns {
		v, ok := row[c.Name]
		switch {
		case ok && v != nil:
			t.Kinds[i] = KindText
			// The string's bytes as they are: proto.Marshal copies them into
			// the payload and nothing writes to them.
			t.Values = append(t.Values, unsafe.Slice(unsafe.StringData(*v), len(*v)))
			*size += len(*v) + 4
		case !ok && contains(unchanged, c.Name):
			t.Kinds[i] = KindUnchanged
		default:
			t.Kinds[i] = KindNull
		}
		*size++
	}
	return t
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}
