package event

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Decoder decodes events in one pass over the message. It remembers names
// (schemas, tables, columns, types) and the last commit time and LSN it
// read, so the messages of one table or transaction cost few allocations:
// all values of a row share one string. It is not safe for concurrent use.
type Decoder struct {
	data []byte
	pos  int
	// scratch holds a string whose escapes were undone, until the next one.
	scratch  []byte
	values   []byte
	interned map[string]string

	lastTime    []byte
	lastTimeVal time.Time
	lastLSN     []byte
	lastLSNVal  LSN
}

// maxNames bounds the interned names: a topic of a database with very many
// tables must not grow the decoder without end.
const maxNames = 1 << 14

// maxDepth bounds the nesting of unknown fields the decoder skips.
const maxDepth = 64

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{interned: map[string]string{}} }

var decoders = sync.Pool{New: func() any { return NewDecoder() }}

// Unmarshal decodes and checks an event: a message that is not JSON, a
// version this package does not know, or a message without the fields its
// kind needs is a *DecodeError.
func Unmarshal(data []byte) (*Event, error) {
	d := decoders.Get().(*Decoder)
	defer decoders.Put(d)
	return d.Decode(data)
}

// Decode decodes and checks one event, as Unmarshal.
func (d *Decoder) Decode(data []byte) (*Event, error) {
	d.data, d.pos = data, 0
	defer func() { d.data = nil }()
	e := &Event{}
	err := d.object(func(key []byte) error { return d.field(e, key) })
	if err == nil {
		d.ws()
		if d.pos != len(d.data) {
			err = d.errorf("data after the object")
		}
	}
	if err == nil {
		err = check(e)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (d *Decoder) errorf(format string, args ...any) error {
	return &DecodeError{Reason: fmt.Sprintf("offset %d: ", d.pos) + fmt.Sprintf(format, args...)}
}

func (d *Decoder) fieldError(key, want string) error {
	return d.errorf("field %q: not %s", key, want)
}

func (d *Decoder) field(e *Event, key []byte) error {
	var err error
	switch string(key) {
	case "v":
		e.V, err = d.int("v")
	case "kind":
		var s string
		s, err = d.name("kind")
		e.Kind = Kind(s)
	case "xid":
		var n int
		if n, err = d.int("xid"); err == nil && (n < 0 || n > 1<<32-1) {
			err = d.fieldError("xid", "an unsigned 32-bit number")
		}
		e.Xid = uint32(n)
	case "lsn":
		e.LSN, err = d.lsn("lsn", true)
	case "commit_time":
		e.CommitTime, err = d.commitTime()
	case "seq":
		e.Seq, err = d.int("seq")
	case "schema":
		e.Schema, err = d.name("schema")
	case "table":
		e.Table, err = d.name("table")
	case "replica_identity":
		e.ReplicaIdentity, err = d.name("replica_identity")
	case "columns":
		e.Columns, err = d.columns()
	case "new":
		e.New, err = d.row("new", e.Columns)
	case "old":
		e.Old, err = d.row("old", e.Columns)
	case "unchanged":
		e.Unchanged, err = d.names("unchanged")
	case "old_unchanged":
		e.OldUnchanged, err = d.names("old_unchanged")
	case "tables":
		e.Tables, err = d.tables()
	case "cascade":
		e.Cascade, err = d.bool("cascade")
	case "restart_identity":
		e.RestartIdentity, err = d.bool("restart_identity")
	case "prefix":
		var b []byte
		if b, _, err = d.stringOrNull("prefix"); err == nil {
			e.Prefix = string(b)
		}
	case "content":
		var b []byte
		if b, _, err = d.stringOrNull("content"); err == nil && len(b) > 0 {
			e.Content = make([]byte, base64.StdEncoding.DecodedLen(len(b)))
			var n int
			if n, err = base64.StdEncoding.Decode(e.Content, b); err != nil {
				return d.fieldError("content", "base64")
			}
			e.Content = e.Content[:n]
		}
	case "end_lsn":
		e.EndLSN, err = d.lsn("end_lsn", false)
	case "rows":
		e.Rows, err = d.int("rows")
	default:
		// A later writer of version 1 may add fields.
		err = d.skip(0)
	}
	return err
}

func (d *Decoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (d *Decoder) peek() byte {
	d.ws()
	if d.pos == len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

func (d *Decoder) expect(c byte) error {
	if d.peek() != c {
		if d.pos == len(d.data) {
			return d.errorf("unexpected end, want %q", c)
		}
		return d.errorf("found %q, want %q", d.data[d.pos], c)
	}
	d.pos++
	return nil
}

// object reads an object, calling member for each key with the decoder
// placed at its value, which member must consume.
func (d *Decoder) object(member func(key []byte) error) error {
	if err := d.expect('{'); err != nil {
		return err
	}
	if d.peek() == '}' {
		d.pos++
		return nil
	}
	for {
		if d.peek() != '"' {
			return d.errorf("want a member name")
		}
		key, err := d.str()
		if err != nil {
			return err
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		d.ws()
		if err := member(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.errorf("want ',' or '}' in an object")
		}
	}
}

// array reads an array, calling item with the decoder placed at each item.
func (d *Decoder) array(item func() error) error {
	if err := d.expect('['); err != nil {
		return err
	}
	if d.peek() == ']' {
		d.pos++
		return nil
	}
	for {
		d.ws()
		if err := item(); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			return nil
		default:
			return d.errorf("want ',' or ']' in an array")
		}
	}
}

// null consumes a JSON null if it is next.
func (d *Decoder) null() bool {
	if d.pos+4 <= len(d.data) && string(d.data[d.pos:d.pos+4]) == "null" {
		d.pos += 4
		return true
	}
	return false
}

// str reads a string at the decoder's position. The result points into
// the message when the string has no escapes, into scratch otherwise; it
// is valid until the next call.
func (d *Decoder) str() ([]byte, error) {
	d.pos++ // the opening quote
	start := d.pos
	for d.pos < len(d.data) && plain[d.data[d.pos]] {
		d.pos++
	}
	switch {
	case d.pos == len(d.data):
		return nil, d.errorf("unterminated string")
	case d.data[d.pos] == '"':
		d.pos++
		return d.data[start : d.pos-1], nil
	case d.data[d.pos] < 0x20:
		return nil, d.errorf("control character in a string")
	}
	return d.slowStr(start)
}

// plain marks the bytes a string can hold as they are: not the quote, the
// backslash, control characters, or the start of a UTF-8 sequence, which
// must be checked.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// slowStr finishes a string that has escapes or non-ASCII bytes, which
// must be checked: invalid UTF-8 becomes U+FFFD, as encoding/json does.
func (d *Decoder) slowStr(start int) ([]byte, error) {
	out := append(d.scratch[:0], d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			d.scratch = out
			return out, nil
		case c == '\\':
			if d.pos+1 >= len(d.data) {
				return nil, d.errorf("unterminated string")
			}
			esc := d.data[d.pos+1]
			d.pos += 2
			switch esc {
			case '"', '\\', '/':
				out = append(out, esc)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return nil, d.errorf("invalid \\u escape")
				}
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
						save := d.pos
						d.pos += 2
						var ok2 bool
						if r2, ok2 = d.hex4(); !ok2 {
							return nil, d.errorf("invalid \\u escape")
						}
						if utf16.DecodeRune(r, r2) == utf8.RuneError {
							d.pos, r2 = save, -1
						}
					}
					if r2 >= 0 {
						r = utf16.DecodeRune(r, r2)
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				return nil, d.errorf("invalid escape \\%c", esc)
			}
		case c < 0x20:
			return nil, d.errorf("control character in a string")
		case c < utf8.RuneSelf:
			out = append(out, c)
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, d.data[d.pos:d.pos+size]...)
			}
			d.pos += size
		}
	}
	return nil, d.errorf("unterminated string")
}

func (d *Decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.data) {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.pos : d.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	d.pos += 4
	return r, true
}

// stringOrNull reads a string or null (reported by isNull).
func (d *Decoder) stringOrNull(key string) (b []byte, isNull bool, err error) {
	switch {
	case d.pos < len(d.data) && d.data[d.pos] == '"':
		b, err = d.str()
		return b, false, err
	case d.null():
		return nil, true, nil
	}
	return nil, false, d.fieldError(key, "a string")
}

// number reads the text of a JSON number.
func (d *Decoder) number() []byte {
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			d.pos++
			continue
		}
		break
	}
	return d.data[start:d.pos]
}

func (d *Decoder) int(key string) (int, error) {
	if d.null() {
		return 0, nil
	}
	n, err := strconv.Atoi(string(d.number()))
	if err != nil {
		return 0, d.fieldError(key, "an integer")
	}
	return n, nil
}

func (d *Decoder) bool(key string) (bool, error) {
	switch {
	case d.pos+4 <= len(d.data) && string(d.data[d.pos:d.pos+4]) == "true":
		d.pos += 4
		return true, nil
	case d.pos+5 <= len(d.data) && string(d.data[d.pos:d.pos+5]) == "false":
		d.pos += 5
		return false, nil
	case d.null():
		return false, nil
	}
	return false, d.fieldError(key, "a boolean")
}

// skip consumes a value of a field this version does not know.
func (d *Decoder) skip(depth int) error {
	if depth > maxDepth {
		return d.errorf("nested deeper than %d", maxDepth)
	}
	switch c := d.peek(); {
	case c == '"':
		_, err := d.str()
		return err
	case c == '{':
		return d.object(func([]byte) error { return d.skip(depth + 1) })
	case c == '[':
		return d.array(func() error { return d.skip(depth + 1) })
	case c == 't' || c == 'f':
		_, err := d.bool("")
		return err
	case c == 'n':
		if !d.null() {
			return d.errorf("invalid literal")
		}
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		if _, err := strconv.ParseFloat(string(d.number()), 64); err != nil {
			return d.errorf("invalid number")
		}
		return nil
	}
	return d.errorf("want a value")
}

// name reads a string that recurs in many messages, interned.
func (d *Decoder) name(key string) (string, error) {
	b, _, err := d.stringOrNull(key)
	if err != nil || len(b) == 0 {
		return "", err
	}
	return d.intern(b), nil
}

func (d *Decoder) intern(b []byte) string {
	if s, ok := d.interned[string(b)]; ok {
		return s
	}
	if len(d.interned) >= maxNames {
		clear(d.interned)
	}
	s := string(b)
	d.interned[s] = s
	return s
}

// lsn reads an LSN; the transaction's commit LSN, repeated in all its
// messages, is parsed once.
func (d *Decoder) lsn(key string, cache bool) (LSN, error) {
	b, isNull, err := d.stringOrNull(key)
	if err != nil || isNull {
		return 0, err
	}
	if cache && d.lastLSN != nil && string(b) == string(d.lastLSN) {
		return d.lastLSNVal, nil
	}
	l, err := ParseLSN(string(b))
	if err != nil {
		return 0, d.errorf("field %q: %v", key, err)
	}
	if cache {
		d.lastLSN, d.lastLSNVal = append(d.lastLSN[:0], b...), l
	}
	return l, nil
}

func (d *Decoder) commitTime() (time.Time, error) {
	b, isNull, err := d.stringOrNull("commit_time")
	if err != nil || isNull {
		return time.Time{}, err
	}
	if d.lastTime != nil && string(b) == string(d.lastTime) {
		return d.lastTimeVal, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, d.errorf("field \"commit_time\": %v", err)
	}
	d.lastTime, d.lastTimeVal = append(d.lastTime[:0], b...), t
	return t, nil
}

func (d *Decoder) columns() ([]Column, error) {
	if d.null() {
		return nil, nil
	}
	cols := make([]Column, 0, 8)
	err := d.array(func() error {
		var c Column
		err := d.object(func(key []byte) error {
			var err error
			switch string(key) {
			case "name":
				c.Name, err = d.name("columns.name")
			case "type":
				c.Type, err = d.name("columns.type")
			case "key":
				c.Key, err = d.bool("columns.key")
			default:
				err = d.skip(1)
			}
			return err
		})
		cols = append(cols, c)
		return err
	})
	return cols, err
}

// row decodes a row object. All its values end in one string, and names
// are shared with columns (written before the rows) or interned.
func (d *Decoder) row(key string, columns []Column) (map[string]*string, error) {
	if d.null() {
		return nil, nil
	}
	type entry struct {
		name       string
		start, end int
		null       bool
	}
	var entries []entry
	d.values = d.values[:0]
	err := d.object(func(k []byte) error {
		en := entry{name: d.columnName(k, columns, len(entries)), start: len(d.values)}
		b, isNull, err := d.stringOrNull(key)
		if err != nil {
			return d.errorf("field %s.%s: not a string or null", key, en.name)
		}
		d.values = append(d.values, b...)
		en.null, en.end = isNull, len(d.values)
		entries = append(entries, en)
		return nil
	})
	if err != nil {
		return nil, err
	}
	all := string(d.values)
	vals := make([]string, len(entries))
	row := make(map[string]*string, len(entries))
	for i, en := range entries {
		if en.null {
			row[en.name] = nil
			continue
		}
		vals[i] = all[en.start:en.end]
		row[en.name] = &vals[i]
	}
	return row, nil
}

// columnName returns a row's key as a string shared with the column of
// that name; at is where a pgtandem writer puts it (rows follow columns).
func (d *Decoder) columnName(k []byte, columns []Column, at int) string {
	if at < len(columns) && columns[at].Name == string(k) {
		return columns[at].Name
	}
	for _, c := range columns {
		if c.Name == string(k) {
			return c.Name
		}
	}
	return d.intern(k)
}

func (d *Decoder) names(key string) ([]string, error) {
	if d.null() {
		return nil, nil
	}
	var names []string
	err := d.array(func() error {
		b, _, err := d.stringOrNull(key)
		names = append(names, d.intern(b))
		return err
	})
	return names, err
}

func (d *Decoder) tables() ([]TableName, error) {
	if d.null() {
		return nil, nil
	}
	var tables []TableName
	err := d.array(func() error {
		var t TableName
		err := d.object(func(key []byte) error {
			var err error
			switch string(key) {
			case "schema":
				t.Schema, err = d.name("tables.schema")
			case "table":
				t.Table, err = d.name("tables.table")
			default:
				err = d.skip(1)
			}
			return err
		})
		tables = append(tables, t)
		return err
	})
	return tables, err
}
