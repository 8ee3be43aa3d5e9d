package broker2pg

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"

	"github.com/pgtandem/pgtandem/event"
)

// Planner tests of issue 12 (kinds 2, 3 and 5), with the fixtures of
// plan_test.go.

// TestPlanDomainKeys: a key column of a domain type is compared as its base
// type, on both sides, in DELETE, UPDATE and a key change; other columns
// and the values written keep the column's own type.
func TestPlanDomainKeys(t *testing.T) {
	got := planAll(t, newTestPlan(), txn(0x90,
		remove("dom", row("k", "a")),
		update("dom", nil, row("k", "b", "v", "2")),
		update("dom", row("k", "c"), row("k", "d", "v", "4")),
		update("dom2", nil, row("k", "b", "n", "1", "v", "x")),
	))
	checkStatements(t, got, []statement{
		{
			sql:  `DELETE FROM "public"."dom" AS t USING unnest($1::text[]) AS u(p1) WHERE t."k"::e = u.p1::e_d::e`,
			args: []string{"[a]"}, lsn: 0x90, msg: 0, expect: 1,
		},
		{
			sql:  `UPDATE "public"."dom" AS t SET "v" = u.p2::integer FROM unnest($1::text[], $2::text[]) AS u(p1, p2) WHERE t."k"::e = u.p1::e_d::e`,
			args: []string{"[b]", "[2]"}, lsn: 0x90, msg: 1, expect: 1,
		},
		{
			sql:  `UPDATE "public"."dom" AS t SET "k" = $1::e_d, "v" = $2::integer WHERE t."k"::e = $3::e_d::e`,
			args: []string{"d", "4", "c"}, lsn: 0x90, msg: 2, expect: 1,
		},
		{
			sql:  `UPDATE "public"."dom2" AS t SET "v" = u.p3::text FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) WHERE t."k"::e = u.p1::e_dd::e AND t."n" = u.p2::integer`,
			args: []string{"[b]", "[1]", "[x]"}, lsn: 0x90, msg: 3, expect: 1,
		},
	})
}

// TestPlanIdentityKeyChange: an UPDATE that gives an identity-always key a
// new value deletes the row and inserts it again in one statement, with
// the unchanged TOAST value (big) and the target-only column (note) taken
// from the deleted row and the generated column left to the target.
func TestPlanIdentityKeyChange(t *testing.T) {
	moved := update("ident", row("id", "1"), row("id", "2", "v", "b"))
	moved.Unchanged = []string{"big"}
	got := planAll(t, newTestPlan(), txn(0xa0, moved))
	checkStatements(t, got, []statement{{
		sql: `WITH d AS (DELETE FROM "public"."ident" AS t WHERE t."id" = $1::integer RETURNING $2::integer AS c1, $3::text AS c2, t."big" AS c3, t."note" AS c4)
INSERT INTO "public"."ident" ("id", "v", "big", "note") OVERRIDING SYSTEM VALUE SELECT d.c1, d.c2, d.c3, d.c4 FROM d`,
		args: []string{"1", "2", "b"}, lsn: 0xa0, msg: 0, expect: 1,
	}})
}

// movedSeqs is the statement that moves the rows of public.seqs whose
// identity-always column s differs from the source's new value.
const movedSeqs = `WITH d AS (DELETE FROM "public"."seqs" AS t USING unnest($1::text[], $2::text[]) AS u(p1, p2) WHERE t."id" = u.p1::integer AND (t."s" IS DISTINCT FROM u.p2::bigint) RETURNING t."id" AS c1, u.p2::bigint AS c2, t."v" AS c3)
INSERT INTO "public"."seqs" ("id", "s", "v") OVERRIDING SYSTEM VALUE SELECT d.c1, d.c2, d.c3 FROM d`

// TestPlanIdentityBesideKey: the old row of an UPDATE holds only the key,
// so for a table with an identity-always column beside the key the UPDATE
// of the other columns is followed by a statement that moves the rows
// whose identity differs on the target; after an INSERT ... ON CONFLICT
// too, which keeps a row's identity. A key change of such a table moves
// the row, as the identity may have changed with the key.
func TestPlanIdentityBesideKey(t *testing.T) {
	got := planAll(t, newTestPlan(), txn(0xb0,
		update("seqs", nil, row("id", "1", "s", "7", "v", "a")),
		update("seqs", nil, row("id", "2", "s", "2", "v", "b")),
		update("seqonly", nil, row("id", "1", "s", "9")),
		insert("seqs", row("id", "3", "s", "3", "v", "c")),
		update("seqs", row("id", "4"), row("id", "40", "s", "8", "v", "d")),
	))
	checkStatements(t, got, []statement{
		{
			sql:  `UPDATE "public"."seqs" AS t SET "v" = u.p2::text FROM unnest($1::text[], $2::text[]) AS u(p1, p2) WHERE t."id" = u.p1::integer`,
			args: []string{"[1 2]", "[a b]"}, lsn: 0xb0, msg: 0, expect: 2,
		},
		{sql: movedSeqs, args: []string{"[1 2]", "[7 2]"}, lsn: 0xb0, msg: 0, expect: -1},
		{
			sql:  `INSERT INTO "public"."seqs" ("id", "s", "v") OVERRIDING SYSTEM VALUE SELECT u.p1::integer, u.p2::bigint, u.p3::text FROM unnest($1::text[], $2::text[], $3::text[]) AS u(p1, p2, p3) ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v"`,
			args: []string{"[3]", "[3]", "[c]"}, lsn: 0xb0, msg: 3, expect: -1,
		},
		{sql: movedSeqs, args: []string{"[3]", "[3]"}, lsn: 0xb0, msg: 3, expect: -1},
		{
			sql: `WITH d AS (DELETE FROM "public"."seqonly" AS t USING unnest($1::text[], $2::text[]) AS u(p1, p2) WHERE t."id" = u.p1::integer AND (t."s" IS DISTINCT FROM u.p2::bigint) RETURNING t."id" AS c1, u.p2::bigint AS c2)
INSERT INTO "public"."seqonly" ("id", "s") OVERRIDING SYSTEM VALUE SELECT d.c1, d.c2 FROM d`,
			args: []string{"[1]", "[9]"}, lsn: 0xb0, msg: 2, expect: -1,
		},
		{
			sql: `WITH d AS (DELETE FROM "public"."seqs" AS t WHERE t."id" = $1::integer RETURNING $2::integer AS c1, $3::bigint AS c2, $4::text AS c3)
INSERT INTO "public"."seqs" ("id", "s", "v") OVERRIDING SYSTEM VALUE SELECT d.c1, d.c2, d.c3 FROM d`,
			args: []string{"4", "40", "8", "d"}, lsn: 0xb0, msg: 4, expect: 1,
		},
	})
}

// TestPlanKeylessIdentityChange: on a table matched by whole rows the old
// row tells whether an identity-always column changed; such updates form a
// run of their own that deletes and inserts the matched rows again, the
// others a run of UPDATE without the identity column.
func TestPlanKeylessIdentityChange(t *testing.T) {
	got := planAll(t, newTestPlan(), txn(0xc0,
		update("bagid", row("a", "1", "s", "1", "b", "x"), row("a", "1", "s", "5", "b", "x")),
		update("bagid", row("a", "2", "s", "2", "b", "y"), row("a", "2", "s", "6", "b", "y2")),
		update("bagid", row("a", "3", "s", "3", "b", "z"), row("a", "4", "s", "3", "b", "z")),
	))
	checkStatements(t, got, []statement{
		{
			sql: `WITH o AS (SELECT ROW(u.p1::integer::text, u.p2::bigint::text, u.p3::text::text)::text AS k, row_number() OVER (PARTITION BY ROW(u.p1::integer::text, u.p2::bigint::text, u.p3::text::text)::text ORDER BY u.ord) AS rn, u.p4 AS v1, u.p5 AS v2, u.p6 AS v3 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS u(p1, p2, p3, p4, p5, p6, ord)),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, ROW(t."a"::text, t."s"::text, t."b"::text)::text AS k, row_number() OVER (PARTITION BY ROW(t."a"::text, t."s"::text, t."b"::text)::text) AS rn FROM "public"."bagid" AS t WHERE ROW(t."a"::text, t."s"::text, t."b"::text)::text IN (SELECT k FROM o)),
d AS (DELETE FROM "public"."bagid" AS t USING m JOIN o ON o.k = m.k AND o.rn = m.rn WHERE t.tableoid = m.toid AND t.ctid = m.tid RETURNING o.v1::integer AS c1, o.v2::bigint AS c2, o.v3::text AS c3)
INSERT INTO "public"."bagid" ("a", "s", "b") OVERRIDING SYSTEM VALUE SELECT d.c1, d.c2, d.c3 FROM d`,
			args: []string{"[1 2]", "[1 2]", "[x y]", "[1 2]", "[5 6]", "[x y2]"}, lsn: 0xc0, msg: 0, expect: 2,
		},
		{
			sql: `WITH o AS (SELECT ROW(u.p1::integer::text, u.p2::bigint::text, u.p3::text::text)::text AS k, row_number() OVER (PARTITION BY ROW(u.p1::integer::text, u.p2::bigint::text, u.p3::text::text)::text ORDER BY u.ord) AS rn, u.p4 AS v1, u.p5 AS v2 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(p1, p2, p3, p4, p5, ord)),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, ROW(t."a"::text, t."s"::text, t."b"::text)::text AS k, row_number() OVER (PARTITION BY ROW(t."a"::text, t."s"::text, t."b"::text)::text) AS rn FROM "public"."bagid" AS t WHERE ROW(t."a"::text, t."s"::text, t."b"::text)::text IN (SELECT k FROM o))
UPDATE "public"."bagid" AS t SET "a" = o.v1::integer, "b" = o.v2::text FROM m JOIN o ON o.k = m.k AND o.rn = m.rn WHERE t.tableoid = m.toid AND t.ctid = m.tid`,
			args: []string{"[3]", "[3]", "[z]", "[4]", "[z]"}, lsn: 0xc0, msg: 2, expect: 1,
		},
	})
}

// TestPlanTruncateBlockedByForeignKey: a foreign key of the target from a
// table the source did not truncate blocks the TRUNCATE before anything is
// sent, naming the referencing table, the key, the message and the LSN.
func TestPlanTruncateBlockedByForeignKey(t *testing.T) {
	p := newTestPlanReferenced([]foreignKey{{from: `"public"."audit"`, name: `"audit_item_fkey"`, to: `"public"."items"`}})
	ev := &event.Event{V: event.Version, Kind: event.KindTruncate, LSN: 0xd0, Cascade: true,
		Tables: []event.TableName{{Schema: "public", Table: "items"}, {Schema: "public", Table: "bag"}}}
	err := p.add(context.Background(), ev, pulsar.NewMessageID(5, 6, -1, -1), 100)
	var be *BlockedError
	if !errors.As(err, &be) || be.Table != `"public"."audit"` || be.LSN != "0/D0" || be.MessageID != pulsar.NewMessageID(5, 6, -1, -1).String() || be.Code != pgerrcode.FeatureNotSupported {
		t.Fatalf("TRUNCATE of a table a target-only table references: %#v, want a BlockedError naming the referencing table, the message and the LSN", err)
	}
	if want := `"public"."audit" references "public"."items" by foreign key "audit_item_fkey"`; !strings.Contains(be.Reason, want) {
		t.Errorf("reason %q does not say %q", be.Reason, want)
	}
	if q := p.take(); len(q) != 0 {
		t.Errorf("a blocked TRUNCATE planned %d statements: %v", len(q), q)
	}
}
