package pg2broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/event"
)

// rowMessage is an Insert, Update or Delete message of pgoutput (without
// streaming, so without a transaction id) split into its parts; the tuples
// stay encoded and alias the message.
//
// These messages are nearly all a capture reads, and pglogrepl.Parse
// allocates every column of them and reads past the end of a truncated one:
// parseRowMessage allocates nothing and names what is wrong.
type rowMessage struct {
	kind     event.Kind
	relation uint32
	// old is the key ('K') or whole old row ('O'), nil when absent; new is
	// nil for a Delete.
	old, new []byte
}

// isRowMessage tells whether a pgoutput message is an Insert, Update or
// Delete.
func isRowMessage(data []byte) bool {
	if len(data) == 0 {
		return false
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete:
		return true
	}
	return false
}

// errTruncated is a message that ends inside one of its fields.
var errTruncated = errors.New("message truncated")

// parseRowMessage splits a message for which isRowMessage is true.
func parseRowMessage(data []byte) (rowMessage, error) {
	var m rowMessage
	typ := pglogrepl.MessageType(data[0])
	b := data[1:]
	if len(b) < 5 {
		return m, fmt.Errorf("%s: %w", typ, errTruncated)
	}
	m.relation, b = binary.BigEndian.Uint32(b), b[4:]
	tuple := func() ([]byte, error) {
		n, err := tupleLen(b[1:])
		if err != nil {
			return nil, fmt.Errorf("%s of relation %d, tuple %q: %w", typ, m.relation, b[0], err)
		}
		t := b[1 : 1+n]
		b = b[1+n:]
		return t, nil
	}
	var err error
	switch typ {
	case pglogrepl.MessageTypeInsert:
		m.kind = event.KindInsert
	case pglogrepl.MessageTypeUpdate:
		m.kind = event.KindUpdate
	case pglogrepl.MessageTypeDelete:
		m.kind = event.KindDelete
	}
	if typ != pglogrepl.MessageTypeInsert && (b[0] == 'K' || b[0] == 'O') {
		if m.old, err = tuple(); err != nil {
			return m, err
		}
	}
	if typ != pglogrepl.MessageTypeDelete {
		if len(b) == 0 || b[0] != 'N' {
			return m, fmt.Errorf("%s of relation %d: no new tuple ('N')", typ, m.relation)
		}
		if m.new, err = tuple(); err != nil {
			return m, err
		}
	} else if m.old == nil {
		return m, fmt.Errorf("%s of relation %d: no old tuple ('K' or 'O')", typ, m.relation)
	}
	if len(b) != 0 {
		return m, fmt.Errorf("%s of relation %d: %d bytes after its tuples", typ, m.relation, len(b))
	}
	return m, nil
}

// tupleLen checks the TupleData at the start of b and returns its length.
func tupleLen(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, errTruncated
	}
	cols, off := int(binary.BigEndian.Uint16(b)), 2
	for range cols {
		if off >= len(b) {
			return 0, errTruncated
		}
		kind := b[off]
		off++
		switch kind {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if off+4 > len(b) {
				return 0, errTruncated
			}
			n := int(binary.BigEndian.Uint32(b[off:]))
			off += 4
			if n < 0 || n > len(b)-off {
				return 0, errTruncated
			}
			off += n
		default:
			return 0, fmt.Errorf("column kind %q", kind)
		}
	}
	return off, nil
}

// tupleValues reads a TupleData that tupleLen checked into a row by column
// name and the names of its unchanged TOASTed columns. keyOnly keeps the key
// columns only: a key-only old tuple sends NULL for the others. The row's
// values are copied into one string and point into it: three allocations a
// row rather than one a value.
func tupleValues(rel *relation, t []byte, keyOnly bool) (map[string]*string, []string, error) {
	cols := int(binary.BigEndian.Uint16(t))
	if cols != len(rel.columns) {
		return nil, nil, fmt.Errorf("%s.%s: tuple has %d columns, relation has %d", rel.schema, rel.table, cols, len(rel.columns))
	}
	var all strings.Builder
	all.Grow(len(t))
	for i, off := 0, 2; i < cols; i++ {
		kind := t[off]
		off++
		if kind == pglogrepl.TupleDataTypeText || kind == pglogrepl.TupleDataTypeBinary {
			n := int(binary.BigEndian.Uint32(t[off:]))
			all.Write(t[off+4 : off+4+n])
			off += 4 + n
		}
	}
	text, at := all.String(), 0
	texts := make([]string, cols)
	values := make(map[string]*string, cols)
	var unchanged []string
	for i, off := 0, 2; i < cols; i++ {
		col := rel.columns[i]
		keep := !keyOnly || col.Key
		kind := t[off]
		off++
		switch kind {
		case pglogrepl.TupleDataTypeNull:
			if keep {
				values[col.Name] = nil
			}
		case pglogrepl.TupleDataTypeToast:
			unchanged = append(unchanged, col.Name)
		case pglogrepl.TupleDataTypeText:
			n := int(binary.BigEndian.Uint32(t[off:]))
			off += 4 + n
			texts[i], at = text[at:at+n], at+n
			if keep {
				values[col.Name] = &texts[i]
			}
		default:
			return nil, nil, fmt.Errorf("%s.%s column %s: tuple data type %q (binary mode is not used)", rel.schema, rel.table, col.Name, kind)
		}
	}
	return values, unchanged, nil
}
