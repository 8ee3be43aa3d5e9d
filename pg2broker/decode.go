package pg2broker

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/event"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// TypeNamer returns format_type(oid, typmod) of a column type; the decoder
// asks it once per type it meets.
type TypeNamer func(ctx context.Context, oid uint32, typmod int32) (string, error)

// relation is what a pgoutput Relation message told about a table.
type relation struct {
	schema, table string
	identity      string
	columns       []event.Column
	// bookkeeping marks pgtandem's own state tables, never published.
	bookkeeping bool
}

// ProtocolError reports pgoutput output that cannot be turned into events;
// the stream stops on it rather than publish something wrong.
type ProtocolError struct {
	LSN    pglogrepl.LSN
	Reason string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("pgoutput at %s: %s", e.LSN, e.Reason)
}

// decoder turns pgoutput messages into events, one transaction at a time.
//
// Transactions that carry a replication origin whose name starts with
// originPrefix were applied by broker2pg and are dropped whole: capturing
// them would echo the other cluster's changes back to it. On PostgreSQL 16
// and later the server already leaves them out (origin 'none'); before that,
// the Origin message that follows BEGIN is the only sign, so BEGIN is held
// back until the next message shows whether one comes.
type decoder struct {
	typeName     TypeNamer
	originPrefix string
	relations    map[uint32]*relation
	types        map[typeKey]string

	begin      *pglogrepl.BeginMessage // the open transaction
	beganOut   bool                    // its BEGIN event was emitted
	skipping   bool                    // it came from a pgtandem origin
	origin     string                  // its replication origin, "" for a client's
	seq        int
	skippedEnd pglogrepl.LSN // end of the last skipped transaction, until taken
}

type typeKey struct {
	oid    uint32
	typmod int32
}

func newDecoder(typeName TypeNamer, originPrefix string) *decoder {
	return &decoder{
		typeName:     typeName,
		originPrefix: originPrefix,
		relations:    map[uint32]*relation{},
		types:        map[typeKey]string{},
	}
}

// decode turns one pgoutput message, received at walStart, into zero or more
// events.
func (d *decoder) decode(ctx context.Context, walStart pglogrepl.LSN, data []byte) ([]*event.Event, error) {
	if isRowMessage(data) {
		return d.rowChange(walStart, data)
	}
	// data may lie in the replication connection's read buffer, and
	// pglogrepl's messages alias it (a logical message's content): a copy
	// outlives the next read. Row messages, nearly all of a stream, are
	// copied by tupleValues alone.
	msg, err := pglogrepl.Parse(bytes.Clone(data))
	if err != nil {
		return nil, &ProtocolError{LSN: walStart, Reason: err.Error()}
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		if d.begin != nil {
			return nil, &ProtocolError{LSN: walStart, Reason: "BEGIN inside an open transaction"}
		}
		d.begin, d.beganOut, d.skipping, d.seq, d.origin = m, false, false, 0, ""
		return nil, nil
	case *pglogrepl.OriginMessage:
		if d.begin != nil && !d.beganOut {
			d.origin = m.Name
			d.skipping = strings.HasPrefix(m.Name, d.originPrefix)
		}
		return nil, nil
	case *pglogrepl.RelationMessage:
		return nil, d.relation(ctx, m)
	case *pglogrepl.TypeMessage:
		// Type names come from format_type() for every type alike.
		return nil, nil
	case *pglogrepl.CommitMessage:
		return d.commit(walStart, m)
	}

	if d.begin == nil {
		if ldm, ok := msg.(*pglogrepl.LogicalDecodingMessage); ok && !ldm.Transactional {
			// Non-transactional messages have no place in the transaction
			// stream; see docs/event-format.md.
			return nil, nil
		}
		return nil, &ProtocolError{LSN: walStart, Reason: fmt.Sprintf("%s outside a transaction", msg.Type())}
	}
	if d.skipping || d.bookkeeping(msg) {
		return nil, nil
	}
	out := d.flushBegin()
	ev, err := d.change(walStart, msg)
	if err != nil {
		return nil, err
	}
	if ev != nil {
		out = append(out, ev)
	}
	return out, nil
}

// bookkeeping tells whether msg changes one of pgtandem's state tables (a
// TRUNCATE only when all its tables are).
func (d *decoder) bookkeeping(msg pglogrepl.Message) bool {
	switch m := msg.(type) {
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if !d.isBookkeeping(id) {
				return false
			}
		}
		return len(m.RelationIDs) > 0
	}
	return false
}

func (d *decoder) isBookkeeping(id uint32) bool {
	rel, ok := d.relations[id]
	return ok && rel.bookkeeping
}

// takeSkipped returns the end LSN of a transaction that was dropped since the
// last call, so the stream can still confirm past it.
func (d *decoder) takeSkipped() (pglogrepl.LSN, bool) {
	end := d.skippedEnd
	d.skippedEnd = 0
	return end, end != 0
}

func (d *decoder) flushBegin() []*event.Event {
	if d.beganOut {
		return nil
	}
	d.beganOut = true
	return []*event.Event{d.envelope(event.KindBegin)}
}

// envelope starts an event of the open transaction with the next Seq.
func (d *decoder) envelope(kind event.Kind) *event.Event {
	ev := &event.Event{
		V:          event.Version,
		Kind:       kind,
		Xid:        d.begin.Xid,
		LSN:        event.LSN(d.begin.FinalLSN),
		CommitTime: d.begin.CommitTime.UTC(),
		Origin:     d.origin,
		Seq:        d.seq,
	}
	d.seq++
	return ev
}

func (d *decoder) commit(walStart pglogrepl.LSN, m *pglogrepl.CommitMessage) ([]*event.Event, error) {
	if d.begin == nil {
		return nil, &ProtocolError{LSN: walStart, Reason: "COMMIT without BEGIN"}
	}
	if m.CommitLSN != d.begin.FinalLSN {
		return nil, &ProtocolError{LSN: walStart, Reason: fmt.Sprintf("COMMIT at %s does not match BEGIN's final LSN %s", m.CommitLSN, d.begin.FinalLSN)}
	}
	defer func() { d.begin = nil }()
	if d.skipping {
		d.skippedEnd = m.TransactionEndLSN
		return nil, nil
	}
	out := d.flushBegin()
	ev := d.envelope(event.KindCommit)
	ev.EndLSN = event.LSN(m.TransactionEndLSN)
	ev.Rows = ev.Seq - 1
	return append(out, ev), nil
}

func (d *decoder) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := &relation{schema: m.Namespace, table: m.RelationName, bookkeeping: catalog.IsBookkeeping(m.Namespace, m.RelationName)}
	switch m.ReplicaIdentity {
	case 'd':
		rel.identity = "default"
	case 'f':
		rel.identity = "full"
	case 'i':
		rel.identity = "index"
	case 'n':
		rel.identity = "nothing"
	default:
		rel.identity = string(rune(m.ReplicaIdentity))
	}
	for _, c := range m.Columns {
		typ, err := d.lookupType(ctx, c.DataType, c.TypeModifier)
		if err != nil {
			return fmt.Errorf("type of column %s of %s.%s: %w", c.Name, m.Namespace, m.RelationName, err)
		}
		rel.columns = append(rel.columns, event.Column{Name: c.Name, Type: typ, Key: c.Flags&1 != 0})
	}
	d.relations[m.RelationID] = rel
	return nil
}

func (d *decoder) lookupType(ctx context.Context, oid uint32, typmod int32) (string, error) {
	if name, ok := d.types[typeKey{oid, typmod}]; ok {
		return name, nil
	}
	name, err := d.typeName(ctx, oid, typmod)
	if err != nil {
		return "", err
	}
	d.types[typeKey{oid, typmod}] = name
	return name, nil
}

func (d *decoder) rel(walStart pglogrepl.LSN, id uint32) (*relation, error) {
	rel, ok := d.relations[id]
	if !ok {
		return nil, &ProtocolError{LSN: walStart, Reason: fmt.Sprintf("change for relation %d before its Relation message", id)}
	}
	return rel, nil
}

func (d *decoder) change(walStart pglogrepl.LSN, msg pglogrepl.Message) (*event.Event, error) {
	switch m := msg.(type) {
	case *pglogrepl.TruncateMessage:
		ev := d.envelope(event.KindTruncate)
		ev.Cascade = m.Option&1 != 0
		ev.RestartIdentity = m.Option&2 != 0
		for _, id := range m.RelationIDs {
			rel, err := d.rel(walStart, id)
			if err != nil {
				return nil, err
			}
			if rel.bookkeeping {
				continue
			}
			ev.Tables = append(ev.Tables, event.TableName{Schema: rel.schema, Table: rel.table})
		}
		return ev, nil
	case *pglogrepl.LogicalDecodingMessage:
		ev := d.envelope(event.KindMessage)
		ev.Prefix = m.Prefix
		ev.Content = bytes.Clone(m.Content) // m aliases the connection's read buffer
		return ev, nil
	default:
		return nil, &ProtocolError{LSN: walStart, Reason: fmt.Sprintf("unexpected %s message", msg.Type())}
	}
}

// rowChange decodes an Insert, Update or Delete message, in the place of
// decode's steps for the other changes: outside a transaction it is an
// error, in a skipped one or of a bookkeeping table nothing.
func (d *decoder) rowChange(walStart pglogrepl.LSN, data []byte) ([]*event.Event, error) {
	if d.begin == nil {
		return nil, &ProtocolError{LSN: walStart, Reason: fmt.Sprintf("%s outside a transaction", pglogrepl.MessageType(data[0]))}
	}
	if d.skipping {
		return nil, nil
	}
	m, err := parseRowMessage(data)
	if err != nil {
		return nil, &ProtocolError{LSN: walStart, Reason: err.Error()}
	}
	if d.isBookkeeping(m.relation) {
		return nil, nil
	}
	out := d.flushBegin()
	rel, err := d.rel(walStart, m.relation)
	if err != nil {
		return nil, err
	}
	ev := d.envelope(m.kind)
	ev.Schema, ev.Table, ev.ReplicaIdentity, ev.Columns = rel.schema, rel.table, rel.identity, rel.columns
	if m.new != nil {
		if ev.New, ev.Unchanged, err = tupleValues(rel, m.new, false); err != nil {
			return nil, &ProtocolError{LSN: walStart, Reason: err.Error()}
		}
	}
	if m.old != nil {
		if ev.Old, ev.OldUnchanged, err = tupleValues(rel, m.old, rel.identity != "full"); err != nil {
			return nil, &ProtocolError{LSN: walStart, Reason: err.Error()}
		}
	}
	return append(out, ev), nil
}
