package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"

	"github.com/pgtandem/pgtandem/event"
)

// The planner tests plan events built with the public package event against
// target tables described as the schema cache would load them, and compare
// the exact statements and arguments: any change of the planner's SQL shows
// up here, without a server.

// testTables are the target tables of the planner tests.
var testTables = []*targetTable{
	testTable("items", [][]string{{"id"}}, "id integer", "name text", "qty integer"),
	testTable("pairs", [][]string{{"a", "b"}}, "a integer", "b integer", "v text"),
	testTable("bag", nil, "a integer", "b text"),
	testTable("seats", [][]string{{"id"}, {"seat"}}, "id integer", "seat integer", "who text"),
	testTable("gen", [][]string{{"id"}}, "id integer identity", "a integer", "twice integer generated"),
	testTable("dom", [][]string{{"k"}}, "k e_d base=e", "v integer"),
	testTable("dom2", [][]string{{"k", "n"}}, "k e_dd base=e", "n integer", "v text"),
	testTable("ident", [][]string{{"id"}}, "id integer identity", "v text", "big text", "twice integer generated", "note text"),
	testTable("seqs", [][]string{{"id"}}, "id integer", "s bigint identity", "v text"),
	testTable("seqonly", [][]string{{"id"}}, "id integer", "s bigint identity"),
	testTable("bagid", nil, "a integer", "s bigint identity", "b text"),
	partitioned(testTable("part", [][]string{{"id", "region"}}, "id integer", "region text")),
}

// testKeys are the replica identity columns the source sends per table;
// tables not listed have REPLICA IDENTITY FULL.
var testKeys = map[string][]string{"items": {"id"}, "pairs": {"a", "b"}, "seats": {"id"}, "gen": {"id"},
	"dom": {"k"}, "dom2": {"k", "n"}, "ident": {"id"}, "seqs": {"id"}, "seqonly": {"id"}, "part": {"id", "region"}}

// targetOnly are columns the target has and the source does not send.
var targetOnly = map[string][]string{"ident": {"note"}}

// testTable describes public.<name>; a column is "name type", with the
// words "identity" (GENERATED ALWAYS AS IDENTITY), "generated", or
// "base=<type>" (a domain over that base type) after it.
func testTable(name string, unique [][]string, columns ...string) *targetTable {
	t := &targetTable{name: event.TableName{Schema: "public", Table: name}, columns: map[string]*targetColumn{}, uniqueKeys: unique}
	t.quoted = t.name.String()
	for _, c := range columns {
		f := strings.Fields(c)
		col := &targetColumn{quoted: event.QuoteIdent(f[0]), cast: f[1], identityAlways: slices.Contains(f, "identity"), skip: slices.Contains(f, "generated")}
		for _, word := range f[2:] {
			if base, ok := strings.CutPrefix(word, "base="); ok {
				col.base = base
			}
		}
		t.columns[f[0]] = col
		t.order = append(t.order, f[0])
	}
	return t
}

func partitioned(t *targetTable) *targetTable {
	t.partitioned = true
	return t
}

func newTestPlan() *plan {
	return newTestPlanReferenced(nil)
}

// newTestPlanReferenced plans against a target where refs keep the tables
// of a TRUNCATE from being truncated alone.
func newTestPlanReferenced(refs []foreignKey) *plan {
	c := &schemaCache{tables: map[event.TableName]*targetTable{}}
	c.referencing = func(context.Context, []*targetTable) ([]foreignKey, error) { return refs, nil }
	for _, t := range testTables {
		c.tables[t.name] = t
	}
	return newPlan(c)
}

// row builds a row from name, value pairs; a value is a string or nil (NULL).
func row(pairs ...any) map[string]*string {
	r := map[string]*string{}
	for i := 0; i < len(pairs); i += 2 {
		if v, ok := pairs[i+1].(string); ok {
			r[pairs[i].(string)] = &v
		} else {
			r[pairs[i].(string)] = nil
		}
	}
	return r
}

// change builds a row change of public.<table> as pg2broker sends it: every
// column of the target's table described, the key columns marked.
func change(kind event.Kind, table string, old, new map[string]*string) *event.Event {
	ev := &event.Event{V: event.Version, Kind: kind, Schema: "public", Table: table, Old: old, New: new}
	keys, keyed := testKeys[table]
	if !keyed {
		ev.ReplicaIdentity = "full"
	}
	for _, t := range testTables {
		if t.name.Table != table {
			continue
		}
		for _, name := range t.order {
			if !slices.Contains(targetOnly[table], name) {
				ev.Columns = append(ev.Columns, event.Column{Name: name, Type: "text", Key: !keyed || slices.Contains(keys, name)})
			}
		}
	}
	return ev
}

func insert(table string, new map[string]*string) *event.Event {
	return change(event.KindInsert, table, nil, new)
}

func update(table string, old, new map[string]*string) *event.Event {
	return change(event.KindUpdate, table, old, new)
}

func remove(table string, old map[string]*string) *event.Event {
	return change(event.KindDelete, table, old, nil)
}

// txn gives the events the commit LSN of one source transaction.
func txn(lsn event.LSN, events ...*event.Event) []*event.Event {
	for _, ev := range events {
		ev.LSN = lsn
	}
	return events
}

// statement is a planned query as the tests compare it: arguments printed
// (a value, NULL, or [a b NULL] for an array) and the first message behind
// it by its number among the planned events.
type statement struct {
	sql    string
	args   []string
	lsn    event.LSN
	msg    int64
	expect int
}

func (s statement) String() string {
	return fmt.Sprintf("%s\n    args %v, lsn %s, message %d, expect %d", s.sql, s.args, s.lsn, s.msg, s.expect)
}

// planAll plans the transactions' events in order, the n-th event arriving
// as message n, and returns every statement.
func planAll(t *testing.T, p *plan, txns ...[]*event.Event) []statement {
	t.Helper()
	n := int64(0)
	for _, events := range txns {
		for _, ev := range events {
			if err := p.add(context.Background(), ev, pulsar.NewMessageID(1, n, -1, -1), 100); err != nil {
				t.Fatalf("plan message %d: %v", n, err)
			}
			n++
		}
	}
	var out []statement
	for _, q := range p.take() {
		s := statement{sql: q.sql, lsn: q.lsn, msg: q.msgID.EntryID(), expect: q.expect}
		for _, a := range q.args {
			s.args = append(s.args, argText(a))
		}
		out = append(out, s)
	}
	return out
}

func argText(a any) string {
	text := func(v *string) string {
		if v == nil {
			return "NULL"
		}
		return *v
	}
	switch v := a.(type) {
	case *string:
		return text(v)
	case []*string:
		var vals []string
		for _, x := range v {
			vals = append(vals, text(x))
		}
		return "[" + strings.Join(vals, " ") + "]"
	}
	return fmt.Sprintf("unexpected %T", a)
}

func checkStatements(t *testing.T, got, want []statement) {
	t.Helper()
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			t.Errorf("statement %d missing, want\n    %s", i, want[i])
		case i >= len(want):
			t.Errorf("statement %d not expected:\n    %s", i, got[i])
		case got[i].String() != want[i].String():
			t.Errorf("statement %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

// TestPlanCompactsChangesOfOneKey: the changes of one key in a batch become
// their net effect, and the rows of a table go into one DELETE, one UPDATE
// per set of columns, and one INSERT, in that order.
func TestPlanCompactsChangesOfOneKey(t *testing.T) {
	got := planAll(t, newTestPlan(), txn(0x10,
		insert("items", row("id", "1", "name", "a", "qty", "1")),                // 0: inserted, updated,
		update("items", nil, row("id", "1", "name", "b", "qty", "2")),           // 1
		remove("items", row("id", "1")),                                         // 2: deleted,
		insert("items", row("id", "2", "name", "c", "qty", "3")),                // 3: inserted, updated
		update("items", nil, row("id", "2", "name", "c", "qty", "4")),           // 4
		update("items", nil, row("id", "3", "name", "d", "qty", nil)),           // 5: updated twice, the
		update("items", nil, row("id", "3", "name", "e")),                       // 6: second without qty
		remove("items", row("id", "4")),                                         // 7: deleted
		insert("items", row("id", "5", "name", "f", "qty", "5")),                // 8: inserted and deleted
		remove("items", row("id", "5")),                                         // 9
		insert("items", row("id", "1", "name", "g", "qty", "7")),                // 10: 1 inserted again
		update("items", nil, row("id", "6", "name", "h", "qty", "6")),           // 11: other SET columns
		update("items", nil, row("id", "7", "name", "i")),                       // 12
		update("items", nil, row("id", "8", "name", "j", "qty", "8")),           // 13
		insert("pairs", row("a", "1", "b", "2", "v", "composite")),              // 14: another table
		update("items", nil, row("id", "2", "name", "c2", "qty", "4")),          // 15: a later change of 2
		remove("pairs", row("a", "1", "b", "3")),                                // 16
		insert("items", row("id", "9", "name", "only id and name", "qty", nil)), // 17
	))
	checkStatements(t, got, []statement{
		{
			sql:  `DELETE FROM "public"."items" AS t USING unnest($1::text[]) AS u(p1) WHERE t."id" = u.p1::integer`,
			args: []string{"[1 4 5]"}, lsn: 0x10, msg: 0, expect: 1, // 1 and 5 were inserted in the batch
		},
		{
			sql:  `UPDATE "public"."items" AS t SET "name" = u.p2::text, "qty" = u.p3::integer FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) WHERE t."id" = u.p1::integer`,
			args: []string{"[3 6 8]", "[e h j]", "[NULL 6 8]"}, lsn: 0x10, msg: 5, expect: 3,
		},
		{
			sql:  `UPDATE "public"."items" AS t SET "name" = u.p2::text FROM unnest($1::text[], $2::text[]) AS u(p1, p2) WHERE t."id" = u.p1::integer`,
			args: []string{"[7]", "[i]"}, lsn: 0x10, msg: 12, expect: 1,
		},
		{
			sql:  `INSERT INTO "public"."items" ("id", "name", "qty") SELECT u.p1::integer, u.p2::text, u.p3::integer FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "qty" = EXCLUDED."qty"`,
			args: []string{"[1 2 9]", "[g c2 only id and name]", "[7 4 NULL]"}, lsn: 0x10, msg: 0, expect: -1,
		},
		{
			sql:  `DELETE FROM "public"."pairs" AS t USING unnest($1::text[], $2::text[]) AS u(p1, p2) WHERE t."a" = u.p1::integer AND t."b" = u.p2::integer`,
			args: []string{"[1]", "[3]"}, lsn: 0x10, msg: 16, expect: 1,
		},
		{
			sql:  `INSERT INTO "public"."pairs" ("a", "b", "v") SELECT u.p1::integer, u.p2::integer, u.p3::text FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) ON CONFLICT ("a", "b") DO UPDATE SET "v" = EXCLUDED."v"`,
			args: []string{"[1]", "[2]", "[composite]"}, lsn: 0x10, msg: 14, expect: -1,
		},
	})
}

// TestPlanKeyChange: an UPDATE that moves a row to another key (single and
// composite) is a statement of its own, after everything planned before it
// and before everything after it.
func TestPlanKeyChange(t *testing.T) {
	old := row("a", "1", "b", "1")
	moved := row("a", "2", "b", "1")
	got := planAll(t, newTestPlan(), txn(0x20,
		insert("items", row("id", "1", "name", "a", "qty", "1")),
		update("items", row("id", "1"), row("id", "10", "name", "a", "qty", "1")),
		update("items", nil, row("id", "10", "name", "b", "qty", "1")),
	), txn(0x21,
		// v is an unchanged TOAST value: absent from the new row, so
		// left as it is.
		func() *event.Event { ev := update("pairs", old, moved); ev.Unchanged = []string{"v"}; return ev }(),
	))
	checkStatements(t, got, []statement{
		{
			sql:  `INSERT INTO "public"."items" ("id", "name", "qty") SELECT u.p1::integer, u.p2::text, u.p3::integer FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "qty" = EXCLUDED."qty"`,
			args: []string{"[1]", "[a]", "[1]"}, lsn: 0x20, msg: 0, expect: -1,
		},
		{
			sql:  `UPDATE "public"."items" AS t SET "id" = $1::integer, "name" = $2::text, "qty" = $3::integer WHERE t."id" = $4::integer`,
			args: []string{"10", "a", "1", "1"}, lsn: 0x20, msg: 1, expect: 1,
		},
		{
			sql:  `UPDATE "public"."items" AS t SET "name" = u.p2::text, "qty" = u.p3::integer FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) WHERE t."id" = u.p1::integer`,
			args: []string{"[10]", "[b]", "[1]"}, lsn: 0x20, msg: 2, expect: 1,
		},
		{
			sql:  `UPDATE "public"."pairs" AS t SET "a" = $1::integer, "b" = $2::integer WHERE t."a" = $3::integer AND t."b" = $4::integer`,
			args: []string{"2", "1", "1", "1"}, lsn: 0x21, msg: 3, expect: 1,
		},
	})
}

// keylessDelete and keylessUpdate are the statements of runs on public.bag
// (a integer, b text), REPLICA IDENTITY FULL, matched on both columns.
const (
	keylessDelete = `WITH o AS (SELECT k, count(*) AS n FROM (SELECT ROW(u.p1::integer::text, u.p2::text::text)::text AS k FROM unnest($1::text[], $2::text[]) AS u(p1, p2)) s GROUP BY k),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, o.n, row_number() OVER (PARTITION BY o.k) AS rn FROM "public"."bag" AS t JOIN o ON ROW(t."a"::text, t."b"::text)::text = o.k)
DELETE FROM "public"."bag" AS t USING m WHERE t.tableoid = m.toid AND t.ctid = m.tid AND m.rn <= m.n`
	keylessUpdate = `WITH o AS (SELECT ROW(u.p1::integer::text, u.p2::text::text)::text AS k, row_number() OVER (PARTITION BY ROW(u.p1::integer::text, u.p2::text::text)::text ORDER BY u.ord) AS rn, u.p3 AS v1, u.p4 AS v2 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(p1, p2, p3, p4, ord)),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, ROW(t."a"::text, t."b"::text)::text AS k, row_number() OVER (PARTITION BY ROW(t."a"::text, t."b"::text)::text) AS rn FROM "public"."bag" AS t WHERE ROW(t."a"::text, t."b"::text)::text IN (SELECT k FROM o))
UPDATE "public"."bag" AS t SET "a" = o.v1::integer, "b" = o.v2::text FROM m JOIN o ON o.k = m.k AND o.rn = m.rn WHERE t.tableoid = m.toid AND t.ctid = m.tid`
	keylessInsert = `INSERT INTO "public"."bag" ("a", "b") SELECT u.p1::integer, u.p2::text FROM unnest($1::text[], $2::text[]) AS u(p1, p2)`
)

// TestPlanKeylessDeletesAndInserts: on a table without key, a run of
// deletes is one statement that matches rows by their text in a hash join
// and deletes as many duplicates as the run names; switching between
// deletes and inserts starts a new statement, as order matters there.
func TestPlanKeylessDeletesAndInserts(t *testing.T) {
	got := planAll(t, newTestPlan(), txn(0x30,
		remove("bag", row("a", "1", "b", "x")),
		remove("bag", row("a", "1", "b", "x")),
		remove("bag", row("a", "2", "b", nil)),
		insert("bag", row("a", "3", "b", "z")),
		insert("bag", row("a", "3", "b", "z")),
		remove("bag", row("a", "3", "b", "z")),
	))
	checkStatements(t, got, []statement{
		{sql: keylessDelete, args: []string{"[1 1 2]", "[x x NULL]"}, lsn: 0x30, msg: 0, expect: 3},
		{sql: keylessInsert, args: []string{"[3 3]", "[z z]"}, lsn: 0x30, msg: 3, expect: -1},
		{sql: keylessDelete, args: []string{"[3]", "[z]"}, lsn: 0x30, msg: 5, expect: 1},
	})
}

// TestPlanKeylessUpdates: a run of updates of a table without key is one
// statement; an update of a row that an update of the run produced starts
// the next statement (which sees that row), and so does an update matching
// other columns (an unchanged TOAST value in the old row).
func TestPlanKeylessUpdates(t *testing.T) {
	toasted := update("bag", row("a", "6"), row("a", "7"))
	toasted.OldUnchanged, toasted.Unchanged = []string{"b"}, []string{"b"}
	got := planAll(t, newTestPlan(), txn(0x40,
		update("bag", row("a", "1", "b", "x"), row("a", "1", "b", "y")),
		update("bag", row("a", "2", "b", "x"), row("a", "2", "b", "y")),
		update("bag", row("a", "1", "b", "y"), row("a", "1", "b", "z")), // chained: new statement
		update("bag", row("a", "5", "b", "x"), row("a", "5", "b", "x2")),
		toasted,
	))
	checkStatements(t, got, []statement{
		{sql: keylessUpdate, args: []string{"[1 2]", "[x x]", "[1 2]", "[y y]"}, lsn: 0x40, msg: 0, expect: 2},
		{sql: keylessUpdate, args: []string{"[1 5]", "[y x]", "[1 5]", "[z x2]"}, lsn: 0x40, msg: 2, expect: 2},
		{
			sql: `WITH o AS (SELECT ROW(u.p1::integer::text)::text AS k, row_number() OVER (PARTITION BY ROW(u.p1::integer::text)::text ORDER BY u.ord) AS rn, u.p2 AS v1 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(p1, p2, ord)),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, ROW(t."a"::text)::text AS k, row_number() OVER (PARTITION BY ROW(t."a"::text)::text) AS rn FROM "public"."bag" AS t WHERE ROW(t."a"::text)::text IN (SELECT k FROM o))
UPDATE "public"."bag" AS t SET "a" = o.v1::integer FROM m JOIN o ON o.k = m.k AND o.rn = m.rn WHERE t.tableoid = m.toid AND t.ctid = m.tid`,
			args: []string{"[6]", "[7]"}, lsn: 0x40, msg: 4, expect: 1,
		},
	})
}

// TestPlanTruncate: a TRUNCATE is a statement of its own between what came
// before and after it, names each table once, ONLY but for a partitioned
// table (truncated with its partitions), keeps RESTART IDENTITY and never
// cascades: the message lists every table the source's CASCADE reached.
func TestPlanTruncate(t *testing.T) {
	items := event.TableName{Schema: "public", Table: "items"}
	bag := event.TableName{Schema: "public", Table: "bag"}
	got := planAll(t, newTestPlan(), txn(0x50,
		insert("items", row("id", "1", "name", "a", "qty", "1")),
		&event.Event{V: event.Version, Kind: event.KindTruncate, Tables: []event.TableName{items, bag, items}, RestartIdentity: true, Cascade: true},
		insert("items", row("id", "2", "name", "b", "qty", "2")),
	), txn(0x51,
		&event.Event{V: event.Version, Kind: event.KindTruncate, Tables: []event.TableName{bag, {Schema: "public", Table: "part"}}},
	))
	insertItems := `INSERT INTO "public"."items" ("id", "name", "qty") SELECT u.p1::integer, u.p2::text, u.p3::integer FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "qty" = EXCLUDED."qty"`
	checkStatements(t, got, []statement{
		{sql: insertItems, args: []string{"[1]", "[a]", "[1]"}, lsn: 0x50, msg: 0, expect: -1},
		{sql: `TRUNCATE ONLY "public"."items", ONLY "public"."bag" RESTART IDENTITY`, lsn: 0x50, msg: 1, expect: -1},
		{sql: insertItems, args: []string{"[2]", "[b]", "[2]"}, lsn: 0x50, msg: 2, expect: -1},
		{sql: `TRUNCATE ONLY "public"."bag", "public"."part"`, lsn: 0x51, msg: 3, expect: -1},
	})
}

// TestPlanGeneratedAndIdentityColumns: generated columns are never written,
// identity-always columns keep the source's value on INSERT and are never
// SET.
func TestPlanGeneratedAndIdentityColumns(t *testing.T) {
	got := planAll(t, newTestPlan(), txn(0x60,
		insert("gen", row("id", "1", "a", "2", "twice", "4")),
		update("gen", nil, row("id", "2", "a", "3", "twice", "6")),
	))
	checkStatements(t, got, []statement{
		{
			sql:  `UPDATE "public"."gen" AS t SET "a" = u.p2::integer FROM unnest($1::text[], $2::text[]) AS u(p1, p2) WHERE t."id" = u.p1::integer`,
			args: []string{"[2]", "[3]"}, lsn: 0x60, msg: 1, expect: 1,
		},
		{
			sql:  `INSERT INTO "public"."gen" ("id", "a") OVERRIDING SYSTEM VALUE SELECT u.p1::integer, u.p2::integer FROM unnest($1::text[], $2::text[]) AS u(p1, p2) ON CONFLICT ("id") DO UPDATE SET "a" = EXCLUDED."a"`,
			args: []string{"[1]", "[2]"}, lsn: 0x60, msg: 0, expect: -1,
		},
	})
}

// TestPlanMissingColumnBlocks: a change naming a column the target lacks
// blocks with the table, the column, the message and the LSN named.
func TestPlanMissingColumnBlocks(t *testing.T) {
	ev := insert("items", row("id", "1", "name", "a", "qty", "1", "extra", "x"))
	ev.Columns = append(ev.Columns, event.Column{Name: "extra", Type: "text"})
	ev.LSN = 0x70
	err := newTestPlan().add(context.Background(), ev, pulsar.NewMessageID(3, 4, -1, -1), 100)
	var be *BlockedError
	if !errors.As(err, &be) || be.Table != `"public"."items"` || be.Column != `"extra"` || be.LSN != "0/70" || be.MessageID != pulsar.NewMessageID(3, 4, -1, -1).String() {
		t.Fatalf("plan of a change with a column the target lacks: %#v, want a BlockedError naming table, column, message and LSN", err)
	}
}

// swap exchanges the seats of rows 1 and 2 through the intermediate seat 0,
// as TestUniqueSwapInOneBatch does on a server: compacted into one UPDATE it
// can violate the unique index on seat mid-statement.
func swap() []*event.Event {
	return txn(0x80,
		update("seats", nil, row("id", "1", "seat", "0", "who", "ann")),
		update("seats", nil, row("id", "2", "seat", "10", "who", "bob")),
		update("seats", nil, row("id", "1", "seat", "20", "who", "ann")),
	)
}

const updateSeats = `UPDATE "public"."seats" AS t SET "seat" = u.p2::integer, "who" = u.p3::text FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) WHERE t."id" = u.p1::integer`

// TestPlanStrictOrderOneChangeAtATime: in strict mode, the fallback after a
// unique violation, every change is a statement of its own in source order;
// otherwise the same changes compact into one statement.
func TestPlanStrictOrderOneChangeAtATime(t *testing.T) {
	checkStatements(t, planAll(t, newTestPlan(), swap()), []statement{
		{sql: updateSeats, args: []string{"[1 2]", "[20 10]", "[ann bob]"}, lsn: 0x80, msg: 0, expect: 2},
	})
	strict := newTestPlan()
	strict.strict = true
	checkStatements(t, planAll(t, strict, swap()), []statement{
		{sql: updateSeats, args: []string{"[1]", "[0]", "[ann]"}, lsn: 0x80, msg: 0, expect: 1},
		{sql: updateSeats, args: []string{"[2]", "[10]", "[bob]"}, lsn: 0x80, msg: 1, expect: 1},
		{sql: updateSeats, args: []string{"[1]", "[20]", "[ann]"}, lsn: 0x80, msg: 2, expect: 1},
	})
}

// TestUniqueViolationArmsStrictOrder: a unique violation makes the service
// apply the transactions up to the last one begun in strict order, once; a
// violation that remains in strict order, or another error, is not retried
// that way. The next session plans exactly those transactions strictly.
func TestUniqueViolationArmsStrictOrder(t *testing.T) {
	s := &Service{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.lastBegun.Store(0x80)
	violation := fmt.Errorf("apply: %w", &BlockedError{Table: `"public"."seats"`, Code: pgerrcode.UniqueViolation, Reason: "duplicate key"})
	if s.retryStrict(&BlockedError{Code: pgerrcode.InvalidTextRepresentation}) {
		t.Fatal("an invalid value armed strict order")
	}
	if !s.retryStrict(violation) || s.strictUntil.Load() != 0x80 {
		t.Fatalf("unique violation: strict order until %d, want 0x80", s.strictUntil.Load())
	}
	if s.retryStrict(violation) {
		t.Fatal("a unique violation that remains in strict order armed it again instead of blocking")
	}

	a := &applier{svc: s, plan: newTestPlan(), targetTxn: &targetTxn{}}
	for _, c := range []struct {
		lsn    event.LSN
		strict bool
	}{{0x80, true}, {0x90, false}} {
		if err := a.begin(context.Background(), &event.Event{V: event.Version, Kind: event.KindBegin, LSN: c.lsn}, nil); err != nil {
			t.Fatal(err)
		}
		if a.plan.strict != c.strict {
			t.Errorf("transaction %s after a violation up to 0/80: strict %v, want %v", c.lsn, a.plan.strict, c.strict)
		}
		a.cur = nil
	}
}

// TestPlanSharedColumns: the decoder gives every change of a relation the
// same Columns, which the plan caches its checks on. Planned with shared
// and with separate column lists, the same changes give the same
// statements, a row with an unchanged TOASTed value included; and a table
// the schema cache loads again (a column dropped) is checked again.
func TestPlanSharedColumns(t *testing.T) {
	changes := func(shared bool) []*event.Event {
		cols := insert("items", nil).Columns
		evs := []*event.Event{
			insert("items", row("id", "1", "name", "a", "qty", "1")),
			update("items", nil, row("id", "2", "qty", "2")), // name unchanged (TOAST)
			insert("items", row("id", "3", "name", "c", "qty", "3")),
			update("items", nil, row("id", "1", "name", "a2", "qty", "4")),
			update("items", nil, row("id", "4", "name", "d", "qty", "6")),
		}
		evs[1].Unchanged = []string{"name"}
		if shared {
			for _, ev := range evs {
				ev.Columns = cols
			}
		}
		return evs
	}
	want := planAll(t, newTestPlan(), txn(0x10, changes(false)...))
	// The row whose name did not change sets qty alone.
	if !slices.ContainsFunc(want, func(s statement) bool {
		return strings.Contains(s.sql, `SET "qty" = u.p2::integer FROM`) && slices.Equal(s.args, []string{"[2]", "[2]"})
	}) {
		t.Fatalf("no UPDATE of qty alone for the row with an unchanged name among:\n%v", want)
	}
	p := newTestPlan()
	checkStatements(t, planAll(t, p, txn(0x10, changes(true)...)), want)
	if len(p.shapes) != 1 {
		t.Fatalf("%d shapes cached for one relation", len(p.shapes))
	}

	ev := changes(true)[0]
	p.schema.tables[ev.QualifiedTable()] = testTable("items", [][]string{{"id"}}, "id integer", "name text")
	var be *BlockedError
	if err := p.add(context.Background(), ev, pulsar.NewMessageID(1, 1, -1, -1), 100); !errors.As(err, &be) || be.Column != `"qty"` {
		t.Fatalf("plan against the table loaded again without qty: %v, want a BlockedError naming qty", err)
	}
}
