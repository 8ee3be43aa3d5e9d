// Package event defines the messages pgtandem publishes to a cluster's topic:
// the stable, documented contract between pg2broker, broker2pg and every
// downstream consumer (docs/event-format.md).
//
// # Shape
//
// Every source transaction becomes a BEGIN message, one message per row
// change (or TRUNCATE, or logical decoding message), and a COMMIT message,
// in commit order on one topic. Each message is one JSON object carrying the
// format version, so consumers can refuse what they do not understand.
//
// Values travel in PostgreSQL's text form, which is lossless across majors
// for every type. NULL is JSON null; an unchanged TOAST value (an UPDATE that
// did not touch a large column) is absent from the row and named in
// Unchanged, because writing NULL there would destroy the value on the target.
package event

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// Version is the format version this package writes and reads.
const Version = 1

// Kind says what a message is.
type Kind string

const (
	KindBegin    Kind = "begin"
	KindInsert   Kind = "insert"
	KindUpdate   Kind = "update"
	KindDelete   Kind = "delete"
	KindTruncate Kind = "truncate"
	// KindMessage is a logical decoding message (pg_logical_emit_message)
	// emitted inside a transaction.
	KindMessage Kind = "message"
	KindCommit  Kind = "commit"
)

// Event is one message of the topic. Which fields are set depends on Kind;
// docs/event-format.md shows each.
type Event struct {
	V    int  `json:"v"`
	Kind Kind `json:"kind"`
	// Xid is the source transaction id.
	Xid uint32 `json:"xid"`
	// LSN is the commit LSN of the transaction, the same in all its messages;
	// the position a consumer orders and resumes by.
	LSN LSN `json:"lsn"`
	// CommitTime is when the source transaction committed.
	CommitTime time.Time `json:"commit_time"`
	// Seq numbers the messages of one transaction from 0 (BEGIN) on, so that
	// (LSN, Seq) identifies a message across restarts.
	Seq int `json:"seq"`

	// Row changes.
	Schema          string             `json:"schema,omitempty"`
	Table           string             `json:"table,omitempty"`
	ReplicaIdentity string             `json:"replica_identity,omitempty"`
	Columns         []Column           `json:"columns,omitempty"`
	New             map[string]*string `json:"new,omitempty"`
	Old             map[string]*string `json:"old,omitempty"`
	// Unchanged names the columns of New left out because their TOASTed
	// value did not change; OldUnchanged the same for Old.
	Unchanged    []string `json:"unchanged,omitempty"`
	OldUnchanged []string `json:"old_unchanged,omitempty"`

	// TRUNCATE.
	Tables          []TableName `json:"tables,omitempty"`
	Cascade         bool        `json:"cascade,omitempty"`
	RestartIdentity bool        `json:"restart_identity,omitempty"`

	// Logical decoding messages; Content is base64 in JSON, as it may be
	// any bytes.
	Prefix  string `json:"prefix,omitempty"`
	Content []byte `json:"content,omitempty"`

	// COMMIT.
	EndLSN LSN `json:"end_lsn,omitempty"`
	// Rows is the number of change messages (rows, truncates, messages) of
	// the transaction, so a consumer can check it saw them all.
	Rows int `json:"rows,omitempty"`
}

// Column describes one column of a row change.
type Column struct {
	Name string `json:"name"`
	// Type is the column's type as format_type() spells it, e.g.
	// "numeric(10,2)" or "public.mood".
	Type string `json:"type"`
	// Key marks the columns of the replica identity (primary key or chosen
	// index; every column for REPLICA IDENTITY FULL).
	Key bool `json:"key,omitempty"`
}

// TableName is a schema-qualified table.
type TableName struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
}

// String quotes the name as SQL would need it.
func (t TableName) String() string { return QuoteIdent(t.Schema) + "." + QuoteIdent(t.Table) }

// QualifiedTable returns the event's table as a TableName.
func (e *Event) QualifiedTable() TableName { return TableName{Schema: e.Schema, Table: e.Table} }

// LSN is a PostgreSQL WAL position; in JSON and properties it reads and
// writes as PostgreSQL prints it, "16/B374D848".
type LSN pglogrepl.LSN

func (l LSN) String() string {
	var buf [17]byte
	return string(appendLSN(buf[:0], l))
}

// MarshalText writes the PostgreSQL form.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads the PostgreSQL form, for consumers that decode events
// with encoding/json (pgtandem's own Decoder parses LSNs itself).
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// ParseLSN reads an LSN in PostgreSQL's form, "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return LSN(h<<32 | l), nil
}

// DecodeError reports a message that is not a valid event of this version.
type DecodeError struct {
	Reason string
}

func (e *DecodeError) Error() string { return "undecodable event: " + e.Reason }

// check refuses an event of a version this package does not know, or
// without the fields its kind needs.
func check(e *Event) error {
	if e.V != Version {
		return &DecodeError{Reason: fmt.Sprintf("format version %d, this build reads version %d", e.V, Version)}
	}
	switch e.Kind {
	case KindBegin, KindMessage:
	case KindCommit:
		if e.EndLSN == 0 {
			return &DecodeError{Reason: "commit without end_lsn"}
		}
	case KindInsert, KindUpdate, KindDelete:
		if e.Table == "" || len(e.Columns) == 0 {
			return &DecodeError{Reason: string(e.Kind) + " without table or columns"}
		}
		if e.Kind != KindDelete && e.New == nil {
			return &DecodeError{Reason: string(e.Kind) + " without new row"}
		}
		if e.Kind == KindDelete && e.Old == nil {
			return &DecodeError{Reason: "delete without old row"}
		}
	case KindTruncate:
		if len(e.Tables) == 0 {
			return &DecodeError{Reason: "truncate without tables"}
		}
	default:
		return &DecodeError{Reason: fmt.Sprintf("unknown kind %q", e.Kind)}
	}
	if e.LSN == 0 {
		return &DecodeError{Reason: "no lsn"}
	}
	return nil
}

// Message properties: consumers filter on them without decoding the payload.
const (
	PropLSN   = "pgtandem.lsn"
	PropSeq   = "pgtandem.seq"
	PropXid   = "pgtandem.xid"
	PropKind  = "pgtandem.kind"
	PropTable = "pgtandem.table"
	// PropSystem is the source's system identifier, on BEGIN and COMMIT
	// messages, so a restarted capture can tell its own topic from a foreign
	// one (every message would cost each consumer a property to decode).
	PropSystem = "pgtandem.system"
)

// Properties returns the message properties of an event.
func (e *Event) Properties() map[string]string {
	p := map[string]string{
		PropLSN:  e.LSN.String(),
		PropSeq:  strconv.Itoa(e.Seq),
		PropXid:  strconv.FormatUint(uint64(e.Xid), 10),
		PropKind: string(e.Kind),
	}
	if e.Table != "" {
		p[PropTable] = e.Schema + "." + e.Table
	}
	return p
}

// Key returns the message key: the table and the values of its key columns
// ("public.orders:42", "public.items:7,3"), so that every change of one row
// shares a key (Key_Shared subscriptions and compaction rely on it). Tables
// without key get the table name alone.
func (e *Event) Key() string {
	if e.Table == "" {
		return ""
	}
	row := e.New
	if e.Kind == KindDelete || (e.Kind == KindUpdate && e.Old != nil) {
		row = e.Old
	}
	var vals []string
	if e.ReplicaIdentity != "full" {
		for _, c := range e.Columns {
			if !c.Key {
				continue
			}
			if v, ok := row[c.Name]; ok && v != nil {
				vals = append(vals, *v)
			} else {
				vals = append(vals, "NULL")
			}
		}
	}
	name := e.Schema + "." + e.Table
	if len(vals) == 0 {
		return name
	}
	return name + ":" + strings.Join(vals, ",")
}

// QuoteIdent quotes an SQL identifier, doubling embedded quotes, so names
// with spaces, capitals, quotes or reserved words stay one identifier.
func QuoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
