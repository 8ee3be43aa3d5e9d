package event

import (
	"encoding/base64"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// The codec is written for this one type because both services pay it once
// per message, and a busy topic carries hundreds of thousands of messages a
// second: a reflection-based encoder spent most of its time sorting map keys
// and a generic decoder allocating every name and value separately
// (BenchmarkMarshal, BenchmarkUnmarshal). The decoder (decode.go) scans the
// message once and builds the Event with few allocations.

// Marshal encodes an event as the JSON object of docs/event-format.md. Row
// values are written in column order, which makes messages easy to read.
func Marshal(e *Event) ([]byte, error) {
	return AppendMarshal(make([]byte, 0, 256+64*len(e.Columns)), e), nil
}

// AppendMarshal appends the JSON encoding of e to dst.
func AppendMarshal(dst []byte, e *Event) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(e.V), 10)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, string(e.Kind))
	dst = append(dst, `,"xid":`...)
	dst = strconv.AppendUint(dst, uint64(e.Xid), 10)
	dst = append(dst, `,"lsn":"`...)
	dst = appendLSN(dst, e.LSN)
	dst = append(dst, `","commit_time":"`...)
	dst = e.CommitTime.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendInt(dst, int64(e.Seq), 10)
	dst = appendField(dst, "schema", e.Schema)
	dst = appendField(dst, "table", e.Table)
	dst = appendField(dst, "replica_identity", e.ReplicaIdentity)
	if len(e.Columns) > 0 {
		dst = append(dst, `,"columns":[`...)
		for i, c := range e.Columns {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendString(dst, c.Name)
			dst = append(dst, `,"type":`...)
			dst = appendString(dst, c.Type)
			if c.Key {
				dst = append(dst, `,"key":true`...)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	distinct := e.New == nil && e.Old == nil || distinctNames(e.Columns)
	dst = appendRow(dst, "new", e.New, e.Columns, distinct)
	dst = appendNames(dst, "unchanged", e.Unchanged)
	dst = appendRow(dst, "old", e.Old, e.Columns, distinct)
	dst = appendNames(dst, "old_unchanged", e.OldUnchanged)
	if len(e.Tables) > 0 {
		dst = append(dst, `,"tables":[`...)
		for i, t := range e.Tables {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"schema":`...)
			dst = appendString(dst, t.Schema)
			dst = append(dst, `,"table":`...)
			dst = appendString(dst, t.Table)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if e.Cascade {
		dst = append(dst, `,"cascade":true`...)
	}
	if e.RestartIdentity {
		dst = append(dst, `,"restart_identity":true`...)
	}
	dst = appendField(dst, "prefix", e.Prefix)
	if len(e.Content) > 0 {
		dst = append(dst, `,"content":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.Content)
		dst = append(dst, '"')
	}
	if e.EndLSN != 0 {
		dst = append(dst, `,"end_lsn":"`...)
		dst = appendLSN(dst, e.EndLSN)
		dst = append(dst, '"')
	}
	if e.Rows != 0 {
		dst = append(dst, `,"rows":`...)
		dst = strconv.AppendInt(dst, int64(e.Rows), 10)
	}
	return append(dst, '}')
}

func appendLSN(dst []byte, l LSN) []byte {
	dst = appendHex(dst, uint32(l>>32))
	dst = append(dst, '/')
	return appendHex(dst, uint32(l))
}

// appendHex writes n as PostgreSQL prints each half of an LSN: upper-case
// hex without leading zeros.
func appendHex(dst []byte, n uint32) []byte {
	for i := 28; i >= 0; i -= 4 {
		if n>>i != 0 || i == 0 {
			dst = append(dst, "0123456789ABCDEF"[(n>>i)&0xF])
		}
	}
	return dst
}

// appendField appends `,"name":"value"`, nothing for an empty value.
func appendField(dst []byte, name, value string) []byte {
	if value == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendString(dst, value)
}

func appendNames(dst []byte, field string, names []string) []byte {
	if len(names) == 0 {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, field...)
	dst = append(dst, `":[`...)
	for i, n := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, n)
	}
	return append(dst, ']')
}

// appendRow writes a row in column order. Names outside columns, which the
// capture never produces, follow sorted so that nothing is dropped, and a
// name that columns repeat (distinct false) is written once.
func appendRow(dst []byte, field string, row map[string]*string, columns []Column, distinct bool) []byte {
	if row == nil {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, field...)
	dst = append(dst, `":{`...)
	open := len(dst)
	written := 0
	for _, c := range columns {
		if v, ok := row[c.Name]; ok {
			dst = appendValue(dst, written, c.Name, v)
			written++
		}
	}
	if written != len(row) || !distinct {
		dst = dst[:open]
		names := make([]string, 0, len(row))
		seen := make(map[string]bool, len(row))
		for _, c := range columns {
			if _, ok := row[c.Name]; ok && !seen[c.Name] {
				seen[c.Name] = true
				names = append(names, c.Name)
			}
		}
		var rest []string
		for name := range row {
			if !seen[name] {
				rest = append(rest, name)
			}
		}
		slices.Sort(rest)
		for i, name := range append(names, rest...) {
			dst = appendValue(dst, i, name, row[name])
		}
	}
	return append(dst, '}')
}

// distinctNames tells whether no two columns share a name, as in every
// PostgreSQL table.
func distinctNames(columns []Column) bool {
	if len(columns) <= 16 {
		for i := range columns {
			for j := i + 1; j < len(columns); j++ {
				if columns[i].Name == columns[j].Name {
					return false
				}
			}
		}
		return true
	}
	seen := make(map[string]struct{}, len(columns))
	for _, c := range columns {
		if _, dup := seen[c.Name]; dup {
			return false
		}
		seen[c.Name] = struct{}{}
	}
	return true
}

func appendValue(dst []byte, i int, name string, v *string) []byte {
	if i > 0 {
		dst = append(dst, ',')
	}
	dst = appendString(dst, name)
	dst = append(dst, ':')
	if v == nil {
		return append(dst, "null"...)
	}
	return appendString(dst, *v)
}

// appendString appends s as a JSON string. Invalid UTF-8, which a UTF8
// database never hands out, becomes U+FFFD so that the message stays valid
// JSON whatever happens.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
