package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgerrcode"
	"github.com/pgtandem/pgtandem/event"
)

// query is one statement sent to the target, with what to name if it fails.
type query struct {
	sql  string
	args []any
	// table, msgID and lsn point an operator at the data behind the
	// statement: the table and the first message that fed it.
	table string
	msgID pulsar.MessageID
	lsn   event.LSN
	// expect is the number of rows the statement must change, -1 when any
	// number is right (an INSERT, a TRUNCATE); another number blocks the
	// apply (see rowCountDiffers).
	expect int
	// into, when set, receives the statement's one row.
	into []any
}

// plan turns row changes into few set-based statements. Within a segment the
// changes of one row (same table and key) are compacted into at most one
// DELETE followed by one INSERT or UPDATE, and all rows of a table and kind
// go into one statement over unnest()ed text arrays. This reorders changes of
// different rows, which is safe because the apply session runs with
// session_replication_role = replica (no triggers, no foreign key checks) and
// statements of one table run deletes, then updates, then inserts.
//
// What cannot be compacted closes the segment and becomes a statement of its
// own, in order: a TRUNCATE, an UPDATE that changes the key, an UPDATE of a
// table without key, and a switch between inserts and deletes on a table
// without key (where duplicate rows make order matter).
//
// Keys are compared as their base type when they are of a domain type
// (targetColumn.base). UPDATE cannot set an identity-always column, so a
// change of one is applied by deleting the row and inserting it again in
// one statement (replaceSQL): a key change in a table with such a column,
// an update of a table without key whose old row shows such a column
// changed, and, after each UPDATE of a keyed table with such a column
// beside the key, the rows whose value on the target differs from the
// source's (the old row, key only, cannot tell).
//
// Tables with a key are planned in plan_keyed.go, tables without key in
// plan_keyless.go; statements.go holds the pieces of SQL both use.
type plan struct {
	schema *schemaCache
	seg    *segment
	done   []query
	rows   int
	bytes  int
	// strict turns every change into a statement of its own, in source
	// order: the fallback for transactions whose compacted statements
	// violate a unique index mid-statement (a swap of unique values through
	// an intermediate one), which the source's order does not.
	strict bool
	// handoffs skips the changes a resumed init's copy of a table holds.
	handoffs tableHandoffs
	// shapes caches shapeOf.
	shapes map[shapeKey]*shape
}

func newPlan(schema *schemaCache) *plan { return &plan{schema: schema, seg: newSegment()} }

type segment struct {
	order  []*tablePlan
	tables map[*targetTable]*tablePlan
}

func newSegment() *segment { return &segment{tables: map[*targetTable]*tablePlan{}} }

// tablePlan collects one table's changes of a segment.
type tablePlan struct {
	t     *targetTable
	keyed bool
	// keyCols are the replica identity columns of a keyed table.
	keyCols []string
	keys    map[string]*rowState
	order   []*rowState
	// A table without key holds a run of one kind whose rows carry the
	// columns cols: the new rows of inserts, the old rows of deletes, and for
	// updates the old row's cols followed by the new values of setCols.
	kind    event.Kind
	cols    []string
	setCols []string
	rows    [][]*string
	// newRows holds the new rows of a run of updates, matched by cols: an
	// update of a row that an earlier update of the run produced must wait
	// for the next statement, which sees it.
	newRows map[string]bool
	// replace marks a run of updates that change identity-always columns,
	// applied by a delete and an insert.
	replace bool
	msgID   pulsar.MessageID
	lsn     event.LSN
}

// add plans one change event received as message msgID.
func (p *plan) add(ctx context.Context, ev *event.Event, msgID pulsar.MessageID, size int) error {
	if err := p.addEvent(ctx, ev, msgID, size); err != nil {
		return err
	}
	if p.strict {
		p.closeSegment()
	}
	return nil
}

func (p *plan) addEvent(ctx context.Context, ev *event.Event, msgID pulsar.MessageID, size int) error {
	if p.handoffs.skip(ev) {
		return nil
	}
	p.rows++
	p.bytes += size
	switch ev.Kind {
	case event.KindTruncate:
		return p.truncate(ctx, ev, msgID)
	case event.KindMessage:
		// Logical decoding messages are for downstream consumers; the
		// target has nothing to store them in.
		return nil
	}
	t, err := p.schema.table(ctx, ev.QualifiedTable())
	if err != nil {
		return withMessage(err, msgID, ev.LSN)
	}
	sh, err := p.shapeOf(t, ev.Columns)
	if err != nil {
		return withMessage(err, msgID, ev.LSN)
	}
	if ev.ReplicaIdentity == "full" || len(sh.keyCols) == 0 {
		return p.addKeyless(t, sh, ev, msgID)
	}
	p.addKeyed(t, sh, ev, msgID)
	return nil
}

// shape is what a change's table and column list decide, the same for every
// change of one relation: its key columns, and the columns a row holding
// all of them writes (writable). Both are clipped, so that appending to
// them copies.
type shape struct {
	keyCols, writable []string
}

// shapeKey names a column list by its first element: the events of one
// relation share their Columns (event.Decoder), and the map entry keeps
// that array alive, so no other list can take its address.
type shapeKey struct {
	t    *targetTable
	cols *event.Column
	n    int
}

// shapeOf checks that the target has every column of cols and returns
// their shape, computed once per table and column list.
func (p *plan) shapeOf(t *targetTable, cols []event.Column) (*shape, error) {
	var key shapeKey
	if len(cols) > 0 {
		key = shapeKey{t: t, cols: &cols[0], n: len(cols)}
		if sh, ok := p.shapes[key]; ok {
			return sh, nil
		}
	}
	sh := &shape{}
	for _, c := range cols {
		tc, err := t.column(c.Name)
		if err != nil {
			return nil, err
		}
		if c.Key {
			sh.keyCols = append(sh.keyCols, c.Name)
		}
		if !tc.skip {
			sh.writable = append(sh.writable, c.Name)
		}
	}
	sh.keyCols, sh.writable = slices.Clip(sh.keyCols), slices.Clip(sh.writable)
	if len(cols) > 0 {
		if p.shapes == nil || len(p.shapes) > maxShapes { // tables reloaded by the schema cache leave theirs behind
			p.shapes = map[shapeKey]*shape{}
		}
		p.shapes[key] = sh
	}
	return sh, nil
}

// maxShapes bounds the shapes a plan keeps.
const maxShapes = 4096

// writableOf lists the columns of row that the target writes, in column
// order: the shape's list when the row holds every column (no unchanged
// TOASTed value), which the decoder's rows do unless they name some
// unchanged.
func writableOf(t *targetTable, sh *shape, row map[string]*string, unchanged []string, cols []event.Column) []string {
	if len(unchanged) == 0 && len(row) == len(cols) {
		return sh.writable
	}
	return writable(t, row, cols)
}

// truncate replays a TRUNCATE on exactly the tables the source truncated:
// pgoutput lists each of them, those its CASCADE reached included, so the
// target's TRUNCATE never cascades (as PostgreSQL's own apply, which
// truncates with DROP_RESTRICT) and names each table ONLY, but for a
// partitioned table, which is truncated with its partitions: a table the
// target holds beside them (one that references them, an inheritance child
// the source left alone) keeps its rows. A foreign key of the target from
// another table would make the TRUNCATE fail: it blocks the apply, naming
// the referencing table, until the operator drops the key or the table.
func (p *plan) truncate(ctx context.Context, ev *event.Event, msgID pulsar.MessageID) error {
	p.closeSegment()
	var tables []*targetTable
	for _, tn := range ev.Tables {
		t, err := p.schema.table(ctx, event.TableName{Schema: tn.Schema, Table: tn.Table})
		if err != nil {
			return withMessage(err, msgID, ev.LSN)
		}
		if !slices.Contains(tables, t) {
			tables = append(tables, t)
		}
	}
	refs, err := p.schema.referencing(ctx, tables)
	if err != nil {
		return err
	}
	if len(refs) > 0 {
		return withMessage(truncateBlocked(refs), msgID, ev.LSN)
	}
	var names, quoted []string
	for _, t := range tables {
		quoted = append(quoted, t.quoted)
		if t.partitioned {
			names = append(names, t.quoted)
		} else {
			names = append(names, "ONLY "+t.quoted)
		}
	}
	sql := "TRUNCATE " + strings.Join(names, ", ")
	if ev.RestartIdentity {
		sql += " RESTART IDENTITY"
	}
	p.done = append(p.done, query{sql: sql, table: strings.Join(quoted, ", "), msgID: msgID, lsn: ev.LSN, expect: -1})
	return nil
}

// truncateBlocked names the foreign keys that keep a TRUNCATE from being
// replayed on the target alone; Code is the SQLSTATE the TRUNCATE would
// fail with.
func truncateBlocked(refs []foreignKey) *BlockedError {
	var keys []string
	for _, fk := range refs {
		keys = append(keys, fmt.Sprintf("%s references %s by foreign key %s", fk.from, fk.to, fk.name))
	}
	return &BlockedError{
		Table: refs[0].from,
		Reason: "the source's TRUNCATE cannot be replayed as it was, because on the target " + strings.Join(keys, ", ") +
			", and the source did not truncate the referencing table: TRUNCATE fails on that key, and CASCADE would empty a table the source never emptied; " +
			"drop the foreign key or the referencing table on the target (or truncate it yourself if its rows must go too), and the apply continues by itself",
		Code: pgerrcode.FeatureNotSupported,
	}
}

// tablePlan returns the segment's plan of t, closing the segment first when
// t is already planned in another mode (its replica identity changed).
func (p *plan) tablePlan(t *targetTable, keyed bool, keyCols []string) *tablePlan {
	tp, ok := p.seg.tables[t]
	if ok && (tp.keyed != keyed || !slices.Equal(tp.keyCols, keyCols)) {
		p.closeSegment()
		ok = false
	}
	if !ok {
		tp = &tablePlan{t: t, keyed: keyed, keyCols: keyCols, keys: map[string]*rowState{}}
		p.seg.tables[t] = tp
		p.seg.order = append(p.seg.order, tp)
	}
	return tp
}

// closeSegment turns the open segment into statements.
func (p *plan) closeSegment() {
	for _, tp := range p.seg.order {
		if tp.keyed {
			p.done = append(p.done, keyedQueries(tp)...)
		} else if len(tp.rows) > 0 {
			p.done = append(p.done, keylessRunQuery(tp))
		}
	}
	p.seg = newSegment()
}

// take returns every planned statement and empties the plan.
func (p *plan) take() []query {
	p.closeSegment()
	q := p.done
	p.done, p.rows, p.bytes = nil, 0, 0
	return q
}

func withMessage(err error, msgID pulsar.MessageID, lsn event.LSN) error {
	var be *BlockedError
	if errors.As(err, &be) {
		be.MessageID, be.LSN = idString(msgID), lsn.String()
	}
	return err
}

// keyString is the map key of a row's values: a key, or a whole row of a
// table without key.
func keyString(vals []*string) string {
	var b strings.Builder
	for _, v := range vals {
		if v == nil {
			b.WriteString("\x00N")
			continue
		}
		b.WriteString("\x00V")
		b.WriteString(*v)
	}
	return b.String()
}
