// Package event defines what pgtandem publishes to a cluster's topic: the
// stable, documented contract between pg2broker, broker2pg and every
// downstream consumer (docs/event-format.md).
//
// # Shape (format 2)
//
// Every source transaction becomes one Pulsar message, a frame (protobuf,
// eventpb.Frame, from eventpb/frame.proto), or several fragments when it is
// larger than the capture's frame limits. A frame describes the tables it
// changes once and carries each change's values in PostgreSQL's text form,
// which is lossless across majors for every type. DecodeFrame reads one;
// Frame.Changes and Frame.Events give its changes as Events. A Framer
// writes them.
//
// NULL is a nil value; an unchanged TOAST value (an UPDATE that did not
// touch a large column) is absent from the row and named in Unchanged,
// because writing NULL there would destroy the value on the target.
package event

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// Version is the format version this package writes and reads.
const Version = 2

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

// Event is one change of a source transaction, or its BEGIN or COMMIT (which
// Frame.Events adds around a transaction's changes). Which fields are set
// depends on Kind; docs/event-format.md shows each.
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
	// Seq numbers the events of one transaction from 0 (BEGIN) on, so that
	// (LSN, Seq) identifies a change across restarts.
	Seq int `json:"seq"`
	// Origin is the replication origin the transaction came in under on
	// the source, "" for a client's transaction.
	Origin string `json:"origin,omitempty"`

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
	// Rows is the number of changes (rows, truncates, messages) of the
	// transaction, so a consumer can check it saw them all.
	Rows int `json:"rows,omitempty"`
}

// Column describes one column of a row change.
type Column struct {
	Name string `json:"name"`
	// Type is the column's type as format_type() spells it in the
	// capture's session, e.g. "numeric(10,2)", "mood", or "sales.mood" for
	// a type outside that session's search_path.
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

// LSN is a PostgreSQL WAL position; in JSON it reads and writes as
// PostgreSQL prints it, "16/B374D848".
type LSN pglogrepl.LSN

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// MarshalText writes the PostgreSQL form.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads the PostgreSQL form, for consumers that read the
// JSON view of events (pgtandem topic tail --json) with encoding/json.
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

// DecodeError reports a message that is not a valid frame of this version.
type DecodeError struct {
	Reason string
}

func (e *DecodeError) Error() string { return "undecodable frame: " + e.Reason }

// Key returns the change's row key: the table and the values of its key
// columns ("public.orders:42", "public.items:7,3"), the same for every change
// of one row, for consumers that route or compact by row. Tables without key
// get the table name alone.
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
