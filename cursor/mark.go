package cursor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// Kind tells a cursor row's role at a switch.
type Kind string

const (
	// Cut is written on the switch's target inside the write pause, before
	// the target takes any client write: its frame in the target's topic is
	// the cut there, every later frame was committed after the switch.
	Cut Kind = "cut"
	// Hop is written on the switch's source once the cut frame's message id
	// is known: a consumer of the source's topic that reads it continues in
	// the target's topic after the cut. It is written only for a switch
	// past its point of no return, so a switch that was undone leaves
	// consumers where they are.
	Hop Kind = "hop"
)

// Table is the table of the cursor rows, in schema pgtandem. It travels
// like any table: each row is in-band in the topic of the cluster it is
// written on, and reaches the other cluster through the other direction.
const Table = "cursor"

// Mark is one cursor row: where a switch cut both topics.
type Mark struct {
	SwitchID string `json:"switch_id"`
	Kind     Kind   `json:"kind"`
	// From and To are the switch's cluster names, FromTopic and ToTopic
	// their topics.
	From      string `json:"from"`
	To        string `json:"to"`
	FromTopic string `json:"from_topic"`
	ToTopic   string `json:"to_topic"`
	// FromMessageID is the message of the switch's marker in the source's
	// topic, the last frame of the source before the cut (an [ID] in text
	// form); FromCommitLSN and FromCommitTime its source transaction's.
	FromMessageID  string    `json:"from_message_id"`
	FromCommitLSN  event.LSN `json:"from_commit_lsn"`
	FromCommitTime time.Time `json:"from_commit_time"`
	// ToAfterMessageID is a message of the target's topic the cut frame
	// comes after, "" for the topic's start: where a search for the cut
	// frame starts.
	ToAfterMessageID string `json:"to_after_message_id,omitempty"`
	// ToMessageID is the cut frame in the target's topic, ToCommitLSN and
	// ToCommitTime its transaction's on the target; set in a Hop row only.
	ToMessageID  string    `json:"to_message_id,omitempty"`
	ToCommitLSN  event.LSN `json:"to_commit_lsn,omitempty"`
	ToCommitTime time.Time `json:"to_commit_time,omitzero"`
}

// Write inserts the row; a row of the same switch and kind already there is
// left as it is (a resumed switch writes it again).
func (m *Mark) Write(ctx context.Context, conn *pgx.Conn) error {
	b := &pgx.Batch{}
	m.Queue(b)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write the %s row of switch %s in pgtandem.cursor: %w", m.Kind, m.SwitchID, err)
	}
	return nil
}

// Queue queues Write's insert on b, to send it with other statements.
func (m *Mark) Queue(b *pgx.Batch) {
	var toID, toLSN *string
	var toTime *time.Time
	if m.ToMessageID != "" {
		lsn := m.ToCommitLSN.String()
		toID, toLSN, toTime = &m.ToMessageID, &lsn, &m.ToCommitTime
	}
	b.Queue(`INSERT INTO pgtandem.cursor (switch_id, kind, from_cluster, to_cluster, from_topic, from_message_id,
		from_commit_lsn, from_commit_time, to_topic, to_after_message_id, to_message_id, to_commit_lsn, to_commit_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7::pg_lsn, $8, $9, $10, $11, $12::pg_lsn, $13) ON CONFLICT (switch_id, kind) DO NOTHING`,
		m.SwitchID, string(m.Kind), m.From, m.To, m.FromTopic, m.FromMessageID, m.FromCommitLSN.String(), m.FromCommitTime,
		m.ToTopic, m.ToAfterMessageID, toID, toLSN, toTime)
}

const markColumns = `switch_id, kind, from_cluster, to_cluster, from_topic, from_message_id, from_commit_lsn, from_commit_time,
	to_topic, to_after_message_id, coalesce(to_message_id, ''), coalesce(to_commit_lsn, '0/0'), coalesce(to_commit_time, 'epoch')`

func scanMark(row pgx.Row) (*Mark, error) {
	m := &Mark{}
	var kind string
	var fromLSN, toLSN pglogrepl.LSN
	err := row.Scan(&m.SwitchID, &kind, &m.From, &m.To, &m.FromTopic, &m.FromMessageID, &fromLSN, &m.FromCommitTime,
		&m.ToTopic, &m.ToAfterMessageID, &m.ToMessageID, &toLSN, &m.ToCommitTime)
	m.Kind, m.FromCommitLSN, m.ToCommitLSN = Kind(kind), event.LSN(fromLSN), event.LSN(toLSN)
	return m, err
}

// hasTable tells whether the cluster has pgtandem.cursor: the read paths
// look, rather than create the schema (a newer pgtandem's migration would
// refuse the older services still running).
func hasTable(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('pgtandem.cursor') IS NOT NULL`).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for pgtandem.cursor: %w", err)
	}
	return ok, nil
}

// ReadMark returns the row of a switch and kind, nil when there is none.
func ReadMark(ctx context.Context, conn *pgx.Conn, switchID string, kind Kind) (*Mark, error) {
	if ok, err := hasTable(ctx, conn); !ok || err != nil {
		return nil, err
	}
	m, err := scanMark(conn.QueryRow(ctx, `SELECT `+markColumns+` FROM pgtandem.cursor WHERE switch_id = $1 AND kind = $2`, switchID, string(kind)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the %s row of switch %s from pgtandem.cursor: %w", kind, switchID, err)
	}
	return m, nil
}

// Hops returns every Hop row the cluster holds, in switch id order (ids
// start with the switch's start time): the switches that completed, as far
// as the cluster knows.
func Hops(ctx context.Context, conn *pgx.Conn) ([]*Mark, error) {
	if ok, err := hasTable(ctx, conn); !ok || err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT `+markColumns+` FROM pgtandem.cursor WHERE kind = 'hop' ORDER BY switch_id`)
	if err != nil {
		return nil, fmt.Errorf("read pgtandem.cursor: %w", err)
	}
	defer rows.Close()
	var out []*Mark
	for rows.Next() {
		m, err := scanMark(rows)
		if err != nil {
			return nil, fmt.Errorf("read pgtandem.cursor: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pgtandem.cursor: %w", err)
	}
	return out, nil
}

// IsOwn tells whether a change is to one of pgtandem's own tables (markers,
// cursor rows), which a consumer passes over unless told otherwise.
func IsOwn(ev *event.Event) bool { return ev.Schema == catalog.Schema }

// MarkError reports a cursor row in a frame that cannot be read.
type MarkError struct {
	Reason string
}

func (e *MarkError) Error() string { return "cursor row in the topic: " + e.Reason }

// MarkOf reads the cursor row an insert into pgtandem.cursor carries; ok is
// false for any other change.
func MarkOf(ev *event.Event) (m *Mark, ok bool, err error) {
	if ev.Kind != event.KindInsert || ev.Schema != catalog.Schema || ev.Table != Table {
		return nil, false, nil
	}
	get := func(col string) string {
		if v := ev.New[col]; v != nil {
			return *v
		}
		return ""
	}
	m = &Mark{SwitchID: get("switch_id"), Kind: Kind(get("kind")), From: get("from_cluster"), To: get("to_cluster"),
		FromTopic: get("from_topic"), FromMessageID: get("from_message_id"), ToTopic: get("to_topic"),
		ToAfterMessageID: get("to_after_message_id"), ToMessageID: get("to_message_id")}
	var errs []error
	lsn := func(col string) event.LSN {
		s := get(col)
		if s == "" {
			return 0
		}
		v, err := pglogrepl.ParseLSN(s)
		errs = append(errs, err)
		return event.LSN(v)
	}
	ts := func(col string) time.Time {
		s := get(col)
		if s == "" {
			return time.Time{}
		}
		// Values travel in PostgreSQL's text form, which pgtandem's
		// sessions pin to ISO dates (catalog.PinTextSettings).
		v, err := time.Parse("2006-01-02 15:04:05.999999-07", s)
		if err != nil {
			v, err = time.Parse("2006-01-02 15:04:05.999999-07:00", s)
		}
		errs = append(errs, err)
		return v
	}
	m.FromCommitLSN, m.ToCommitLSN = lsn("from_commit_lsn"), lsn("to_commit_lsn")
	m.FromCommitTime, m.ToCommitTime = ts("from_commit_time"), ts("to_commit_time")
	if err := errors.Join(errs...); err != nil {
		return nil, true, &MarkError{Reason: fmt.Sprintf("switch %s: %v", m.SwitchID, err)}
	}
	if m.Kind != Cut && m.Kind != Hop || m.SwitchID == "" || m.From == "" || m.To == "" {
		return nil, true, &MarkError{Reason: fmt.Sprintf("switch %q kind %q from %q to %q is incomplete", m.SwitchID, m.Kind, m.From, m.To)}
	}
	if m.Kind == Hop {
		if _, err := ParseID(m.ToMessageID); err != nil {
			return nil, true, &MarkError{Reason: fmt.Sprintf("hop of switch %s: to_message_id: %v", m.SwitchID, err)}
		}
	}
	return m, true, nil
}
