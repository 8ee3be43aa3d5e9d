package event

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/event/eventpb"
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
func DecodeFrame(payload []byte) (*Frame, error) {
	var pb eventpb.Frame
	h, err := decodeHeader(payload, &pb)
	if err != nil {
		return nil, err
	}
	f := &Frame{Header: h}
	rels := make([]relation, len(pb.Relations))
	for i, r := range pb.Relations {
		rel, err := decodeRelation(r)
		if err != nil {
			return nil, &DecodeError{Reason: fmt.Sprintf("relation %d: %s", i, err)}
		}
		rels[i] = rel
	}
	f.Changes = make([]*Event, len(pb.Changes))
	for i, c := range pb.Changes {
		ev, err := decodeChange(f, rels, c)
		if err != nil {
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
	var pb eventpb.Frame
	h, err := decodeHeader(payload, &pb)
	return h, len(pb.Changes), err
}

func decodeHeader(payload []byte, pb *eventpb.Frame) (Header, error) {
	if err := proto.Unmarshal(payload, pb); err != nil {
		return Header{}, &DecodeError{Reason: "not a protobuf frame: " + err.Error()}
	}
	if pb.FormatVersion != Version {
		if pb.FormatVersion == 0 {
			return Header{}, &DecodeError{Reason: "no format version (not a pgtandem frame?)"}
		}
		return Header{}, &VersionError{Version: pb.FormatVersion}
	}
	h := Header{
		SystemID:     pb.SystemId,
		Xid:          pb.Xid,
		LSN:          LSN(pb.CommitLsn),
		EndLSN:       LSN(pb.EndLsn),
		CommitTime:   time.UnixMicro(pb.CommitTimeUs).UTC(),
		Origin:       pb.Origin,
		Fragment:     int(pb.Fragment),
		Last:         pb.LastFragment,
		FirstChange:  int(pb.FirstChange),
		TotalChanges: int(pb.TotalChanges),
	}
	switch {
	case h.LSN == 0:
		return h, &DecodeError{Reason: "frame without commit_lsn"}
	case h.Last && h.EndLSN == 0:
		return h, &DecodeError{Reason: "last fragment without end_lsn"}
	case h.FirstChange < 1:
		return h, &DecodeError{Reason: "frame without first_change"}
	case h.Fragment == 0 && h.FirstChange != 1:
		return h, &DecodeError{Reason: fmt.Sprintf("first fragment starts at change %d", h.FirstChange)}
	case h.Last && h.TotalChanges != h.FirstChange+len(pb.Changes)-1:
		return h, &DecodeError{Reason: fmt.Sprintf("last fragment says %d changes, holds changes %d to %d", h.TotalChanges, h.FirstChange, h.FirstChange+len(pb.Changes)-1)}
	}
	return h, nil
}

// relation is a decoded Relation: its columns are shared by every event of
// the frame that changes the table.
type relation struct {
	schema, table, identity string
	columns                 []Column
}

var identityNames = map[eventpb.ReplicaIdentity]string{
	eventpb.ReplicaIdentity_REPLICA_IDENTITY_DEFAULT: "default",
	eventpb.ReplicaIdentity_REPLICA_IDENTITY_INDEX:   "index",
	eventpb.ReplicaIdentity_REPLICA_IDENTITY_FULL:    "full",
	eventpb.ReplicaIdentity_REPLICA_IDENTITY_NOTHING: "nothing",
}

func decodeRelation(r *eventpb.Relation) (relation, error) {
	rel := relation{schema: r.Schema, table: r.Table, identity: identityNames[r.ReplicaIdentity]}
	switch {
	case r.Table == "":
		return rel, fmt.Errorf("no table name")
	case rel.identity == "":
		return rel, fmt.Errorf("%s.%s: unknown replica identity %d", r.Schema, r.Table, r.ReplicaIdentity)
	}
	rel.columns = make([]Column, len(r.Columns))
	for i, c := range r.Columns {
		if c.Name == "" || c.Type == "" {
			return rel, fmt.Errorf("%s.%s: column %d without name or type", r.Schema, r.Table, i)
		}
		rel.columns[i] = Column{Name: c.Name, Type: c.Type, Key: c.Key}
	}
	return rel, nil
}

func decodeChange(f *Frame, rels []relation, c *eventpb.Change) (*Event, error) {
	ev := &Event{V: Version, Xid: f.Xid, LSN: f.LSN, CommitTime: f.CommitTime, Origin: f.Origin}
	if c.Op == eventpb.Op_OP_TRUNCATE {
		ev.Kind, ev.Cascade, ev.RestartIdentity = KindTruncate, c.Cascade, c.RestartIdentity
		if len(c.TruncateRelations) == 0 {
			return nil, fmt.Errorf("truncate without tables")
		}
		for _, i := range c.TruncateRelations {
			if int(i) >= len(rels) {
				return nil, fmt.Errorf("truncate of relation %d, frame describes %d", i, len(rels))
			}
			ev.Tables = append(ev.Tables, TableName{Schema: rels[i].schema, Table: rels[i].table})
		}
		return ev, nil
	}
	if c.Op == eventpb.Op_OP_MESSAGE {
		ev.Kind, ev.Prefix, ev.Content = KindMessage, c.Prefix, c.Content
		return ev, nil
	}
	switch c.Op {
	case eventpb.Op_OP_INSERT:
		ev.Kind = KindInsert
	case eventpb.Op_OP_UPDATE:
		ev.Kind = KindUpdate
	case eventpb.Op_OP_DELETE:
		ev.Kind = KindDelete
	default:
		return nil, fmt.Errorf("unknown op %d", c.Op)
	}
	if int(c.Relation) >= len(rels) {
		return nil, fmt.Errorf("%s of relation %d, frame describes %d", ev.Kind, c.Relation, len(rels))
	}
	rel := &rels[c.Relation]
	ev.Schema, ev.Table, ev.ReplicaIdentity, ev.Columns = rel.schema, rel.table, rel.identity, rel.columns
	switch {
	case ev.Kind != KindDelete && c.New == nil:
		return nil, fmt.Errorf("%s without new row", ev.Kind)
	case ev.Kind == KindDelete && c.Old == nil:
		return nil, fmt.Errorf("delete without old row")
	case ev.Kind == KindInsert && c.Old != nil, ev.Kind == KindDelete && c.New != nil:
		return nil, fmt.Errorf("%s with a row it cannot have", ev.Kind)
	}
	var err error
	if c.New != nil {
		if ev.New, ev.Unchanged, err = decodeTuple(rel, c.New, false); err != nil {
			return nil, fmt.Errorf("new row: %w", err)
		}
	}
	if c.Old != nil {
		if ev.Old, ev.OldUnchanged, err = decodeTuple(rel, c.Old, rel.identity != "full"); err != nil {
			return nil, fmt.Errorf("old row: %w", err)
		}
	}
	return ev, nil
}

// decodeTuple reads a tuple into a row by column name; keyOnly keeps only
// the key columns (the others of a key-only old row are NULL placeholders).
func decodeTuple(rel *relation, t *eventpb.Tuple, keyOnly bool) (map[string]*string, []string, error) {
	if len(t.Kinds) != len(rel.columns) {
		return nil, nil, fmt.Errorf("%d column kinds for %d columns of %s.%s", len(t.Kinds), len(rel.columns), rel.schema, rel.table)
	}
	row := make(map[string]*string, len(rel.columns))
	var unchanged []string
	next := 0
	for i, k := range t.Kinds {
		c := rel.columns[i]
		switch k {
		case KindNull, KindUnchanged, KindText:
		default:
			return nil, nil, fmt.Errorf("column %s: unknown value kind %q", c.Name, k)
		}
		if k == KindText {
			if next >= len(t.Values) {
				return nil, nil, fmt.Errorf("column %s: value missing (%d values)", c.Name, len(t.Values))
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
			s := string(t.Values[next-1])
			row[c.Name] = &s
		}
	}
	if next != len(t.Values) {
		return nil, nil, fmt.Errorf("%d values for %d text columns", len(t.Values), next)
	}
	return row, unchanged, nil
}

// The kinds of a tuple's column, as in pgoutput's TupleData.
const (
	KindNull      = 'n'
	KindUnchanged = 'u'
	KindText      = 't'
)
