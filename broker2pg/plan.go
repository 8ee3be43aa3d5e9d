package broker2pg

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/apache/pulsar-client-go/pulsar"
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
	// expect is the number of rows the statement must change; -1 when the
	// number is not known (a DELETE of a row inserted in the same batch).
	expect int
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
	msgID   pulsar.MessageID
	lsn     event.LSN
}

// rowState is the net effect of a segment's changes on one key.
type rowState struct {
	key   []*string
	del   bool
	write event.Kind // "", insert or update
	cols  []string   // columns written, in event order
	vals  map[string]*string
	msgID pulsar.MessageID
	lsn   event.LSN
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
	var keyCols []string
	for _, c := range ev.Columns {
		if _, err := t.column(c.Name); err != nil {
			return withMessage(err, msgID, ev.LSN)
		}
		if c.Key {
			keyCols = append(keyCols, c.Name)
		}
	}
	if ev.ReplicaIdentity == "full" || len(keyCols) == 0 {
		return p.addUnkeyed(t, ev, msgID)
	}
	tp := p.tablePlan(t, true, keyCols)
	switch ev.Kind {
	case event.KindInsert:
		rs := tp.state(keyValues(keyCols, ev.New, nil), msgID, ev.LSN)
		rs.write = event.KindInsert
		rs.cols, rs.vals = writable(t, ev.New, ev.Columns), ev.New
	case event.KindUpdate:
		newKey := keyValues(keyCols, ev.New, ev.Old)
		if ev.Old != nil && keyString(keyValues(keyCols, ev.Old, nil)) != keyString(newKey) {
			p.closeSegment()
			p.done = append(p.done, keyChangeQuery(t, keyCols, ev, msgID))
			return nil
		}
		rs := tp.state(newKey, msgID, ev.LSN)
		if rs.write == "" {
			rs.write = event.KindUpdate
			rs.vals = map[string]*string{}
		}
		for _, name := range writable(t, ev.New, ev.Columns) {
			if _, seen := rs.vals[name]; !seen {
				rs.cols = append(rs.cols, name)
			}
			rs.vals[name] = ev.New[name]
		}
	case event.KindDelete:
		rs := tp.state(keyValues(keyCols, ev.Old, nil), msgID, ev.LSN)
		rs.del, rs.write, rs.cols, rs.vals = true, "", nil, nil
	}
	return nil
}

// addUnkeyed plans a change of a table matched by whole rows (REPLICA
// IDENTITY FULL).
func (p *plan) addUnkeyed(t *targetTable, ev *event.Event, msgID pulsar.MessageID) error {
	switch ev.Kind {
	case event.KindUpdate:
		p.addUnkeyedUpdate(t, ev, msgID)
		return nil
	case event.KindInsert:
		return p.appendRun(t, ev.Kind, writable(t, ev.New, ev.Columns), ev.New, msgID, ev.LSN)
	default:
		return p.appendRun(t, ev.Kind, present(ev.Old, ev.OldUnchanged, ev.Columns), ev.Old, msgID, ev.LSN)
	}
}

// addUnkeyedUpdate adds an update of a table matched by whole rows to a
// run of updates with the same matched and set columns, applied by one
// statement: a large transaction updating rows of a keyless table must not
// cost a scan of the table per row.
func (p *plan) addUnkeyedUpdate(t *targetTable, ev *event.Event, msgID pulsar.MessageID) {
	match := present(ev.Old, ev.OldUnchanged, ev.Columns)
	set := settable(t, writable(t, ev.New, ev.Columns), nil)
	if len(set) == 0 {
		return // only columns the target computes itself changed
	}
	vals := make([]*string, 0, len(match)+len(set))
	for _, c := range match {
		vals = append(vals, ev.Old[c])
	}
	tp := p.tablePlan(t, false, nil)
	if len(tp.rows) > 0 && (tp.kind != event.KindUpdate || !equalStrings(tp.cols, match) || !equalStrings(tp.setCols, set) || tp.newRows[keyString(vals)]) {
		p.closeSegment()
		tp = p.tablePlan(t, false, nil)
	}
	if len(tp.rows) == 0 {
		tp.kind, tp.cols, tp.setCols, tp.msgID, tp.lsn, tp.newRows = event.KindUpdate, match, set, msgID, ev.LSN, map[string]bool{}
	}
	newRow := make([]*string, len(match))
	for i, c := range match {
		// A column absent from the new row kept its old value (unchanged
		// TOAST).
		if v, ok := ev.New[c]; ok {
			newRow[i] = v
		} else {
			newRow[i] = ev.Old[c]
		}
	}
	tp.newRows[keyString(newRow)] = true
	for _, c := range set {
		vals = append(vals, ev.New[c])
	}
	tp.rows = append(tp.rows, vals)
}

func (p *plan) appendRun(t *targetTable, kind event.Kind, cols []string, row map[string]*string, msgID pulsar.MessageID, lsn event.LSN) error {
	tp := p.tablePlan(t, false, nil)
	if len(tp.rows) > 0 && (tp.kind != kind || !equalStrings(tp.cols, cols)) {
		p.closeSegment()
		tp = p.tablePlan(t, false, nil)
	}
	if len(tp.rows) == 0 {
		tp.kind, tp.cols, tp.msgID, tp.lsn = kind, cols, msgID, lsn
	}
	vals := make([]*string, len(cols))
	for i, c := range cols {
		vals[i] = row[c]
	}
	tp.rows = append(tp.rows, vals)
	return nil
}

func (p *plan) truncate(ctx context.Context, ev *event.Event, msgID pulsar.MessageID) error {
	p.closeSegment()
	var names []string
	seen := map[string]bool{}
	for _, tn := range ev.Tables {
		t, err := p.schema.table(ctx, event.TableName{Schema: tn.Schema, Table: tn.Table})
		if err != nil {
			return withMessage(err, msgID, ev.LSN)
		}
		if !seen[t.quoted] {
			seen[t.quoted] = true
			names = append(names, t.quoted)
		}
	}
	sql := "TRUNCATE " + strings.Join(names, ", ")
	if ev.RestartIdentity {
		sql += " RESTART IDENTITY"
	}
	if ev.Cascade {
		sql += " CASCADE"
	}
	p.done = append(p.done, query{sql: sql, table: strings.Join(names, ", "), msgID: msgID, lsn: ev.LSN, expect: -1})
	return nil
}

// tablePlan returns the segment's plan of t, closing the segment first when
// t is already planned in another mode (its replica identity changed).
func (p *plan) tablePlan(t *targetTable, keyed bool, keyCols []string) *tablePlan {
	tp, ok := p.seg.tables[t]
	if ok && (tp.keyed != keyed || !equalStrings(tp.keyCols, keyCols)) {
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

func (tp *tablePlan) state(key []*string, msgID pulsar.MessageID, lsn event.LSN) *rowState {
	k := keyString(key)
	rs, ok := tp.keys[k]
	if !ok {
		rs = &rowState{key: key, msgID: msgID, lsn: lsn}
		tp.keys[k] = rs
		tp.order = append(tp.order, rs)
	}
	return rs
}

// closeSegment turns the open segment into statements.
func (p *plan) closeSegment() {
	for _, tp := range p.seg.order {
		if tp.keyed {
			p.done = append(p.done, keyedQueries(tp)...)
		} else if len(tp.rows) > 0 {
			p.done = append(p.done, unkeyedRunQuery(tp))
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
	if be, ok := err.(*BlockedError); ok {
		be.MessageID, be.LSN = idString(msgID), lsn.String()
	}
	return err
}

// keyValues reads the key columns from row, falling back to alt for a key
// column row lacks (an unchanged TOASTed key in an UPDATE's new row).
func keyValues(keyCols []string, row, alt map[string]*string) []*string {
	out := make([]*string, len(keyCols))
	for i, c := range keyCols {
		v, ok := row[c]
		if !ok && alt != nil {
			v = alt[c]
		}
		out[i] = v
	}
	return out
}

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

// writable lists the columns of row the target takes, in event order:
// generated columns are computed by the target itself.
func writable(t *targetTable, row map[string]*string, cols []event.Column) []string {
	var out []string
	for _, c := range cols {
		if _, ok := row[c.Name]; ok && !t.columns[c.Name].skip {
			out = append(out, c.Name)
		}
	}
	return out
}

// present lists the columns of an old row that can be matched: those sent,
// minus unchanged TOAST values the event does not carry.
func present(row map[string]*string, unchanged []string, cols []event.Column) []string {
	var out []string
	for _, c := range cols {
		if _, ok := row[c.Name]; ok && !contains(unchanged, c.Name) {
			out = append(out, c.Name)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// params numbers statement parameters and names unnest() columns.
type params struct {
	args []any
}

func (ps *params) add(v any) string {
	ps.args = append(ps.args, v)
	return "$" + strconv.Itoa(len(ps.args))
}

// unnest returns "unnest($1::text[], ...) AS u(p1, ...)" over columns of
// text values.
func (ps *params) unnest(columns [][]*string) string {
	fn, names := ps.unnestParts(columns)
	return "unnest(" + fn + ") AS u(" + names + ")"
}

// unnestOrdinal is unnest with each row's position as column ord.
func (ps *params) unnestOrdinal(columns [][]*string) string {
	fn, names := ps.unnestParts(columns)
	return "unnest(" + fn + ") WITH ORDINALITY AS u(" + names + ", ord)"
}

func (ps *params) unnestParts(columns [][]*string) (fn, names string) {
	var fns, ns []string
	for i, col := range columns {
		fns = append(fns, ps.add(col)+"::text[]")
		ns = append(ns, "p"+strconv.Itoa(i+1))
	}
	return strings.Join(fns, ", "), strings.Join(ns, ", ")
}

func cast(t *targetTable, col, expr string) string {
	return expr + "::" + t.columns[col].cast
}

// keyedQueries writes a keyed table's segment: deletes, updates grouped by
// their SET columns, inserts grouped by their columns.
func keyedQueries(tp *tablePlan) []query {
	t := tp.t
	var out []query
	first := func(rs []*rowState) (pulsar.MessageID, event.LSN) { return rs[0].msgID, rs[0].lsn }
	var dels []*rowState
	updates := map[string][]*rowState{}
	inserts := map[string][]*rowState{}
	var updOrder, insOrder []string
	for _, rs := range tp.order {
		if rs.del {
			dels = append(dels, rs)
		}
		switch rs.write {
		case event.KindUpdate:
			sig := strings.Join(settable(t, rs.cols, tp.keyCols), "\x00")
			if _, ok := updates[sig]; !ok {
				updOrder = append(updOrder, sig)
			}
			updates[sig] = append(updates[sig], rs)
		case event.KindInsert:
			sig := strings.Join(rs.cols, "\x00")
			if _, ok := inserts[sig]; !ok {
				insOrder = append(insOrder, sig)
			}
			inserts[sig] = append(inserts[sig], rs)
		}
	}
	keyMatch := func(offset int) string {
		var conds []string
		for i, k := range tp.keyCols {
			conds = append(conds, "t."+event.QuoteIdent(k)+" = "+cast(t, k, "u.p"+strconv.Itoa(offset+i+1)))
		}
		return strings.Join(conds, " AND ")
	}
	keyColumns := func(rows []*rowState) [][]*string {
		cols := make([][]*string, len(tp.keyCols))
		for _, rs := range rows {
			for i := range tp.keyCols {
				cols[i] = append(cols[i], rs.key[i])
			}
		}
		return cols
	}
	if len(dels) > 0 {
		var ps params
		sql := fmt.Sprintf("DELETE FROM %s AS t USING %s WHERE %s", t.quoted, ps.unnest(keyColumns(dels)), keyMatch(0))
		id, lsn := first(dels)
		out = append(out, query{sql: sql, args: ps.args, table: t.quoted, msgID: id, lsn: lsn, expect: -1})
	}
	for _, sig := range updOrder {
		rows := updates[sig]
		set := settable(t, rows[0].cols, tp.keyCols)
		if len(set) == 0 {
			continue
		}
		cols := keyColumns(rows)
		var assign []string
		for i, c := range set {
			vals := make([]*string, len(rows))
			for j, rs := range rows {
				vals[j] = rs.vals[c]
			}
			cols = append(cols, vals)
			assign = append(assign, event.QuoteIdent(c)+" = "+cast(t, c, "u.p"+strconv.Itoa(len(tp.keyCols)+i+1)))
		}
		var ps params
		sql := fmt.Sprintf("UPDATE %s AS t SET %s FROM %s WHERE %s", t.quoted, strings.Join(assign, ", "), ps.unnest(cols), keyMatch(0))
		id, lsn := first(rows)
		out = append(out, query{sql: sql, args: ps.args, table: t.quoted, msgID: id, lsn: lsn, expect: len(rows)})
	}
	for _, sig := range insOrder {
		rows := inserts[sig]
		names := rows[0].cols
		cols := make([][]*string, len(names))
		for _, rs := range rows {
			for i, c := range names {
				cols[i] = append(cols[i], rs.vals[c])
			}
		}
		var ps params
		sql := insertInto(t, names) + " SELECT " + castColumns(t, names) + " FROM " + ps.unnest(cols)
		if target := t.conflictTarget(tp.keyCols); target != "" {
			var set []string
			for _, c := range settable(t, names, tp.keyCols) {
				set = append(set, event.QuoteIdent(c)+" = EXCLUDED."+event.QuoteIdent(c))
			}
			if len(set) == 0 {
				sql += " ON CONFLICT (" + target + ") DO NOTHING"
			} else {
				sql += " ON CONFLICT (" + target + ") DO UPDATE SET " + strings.Join(set, ", ")
			}
		}
		id, lsn := first(rows)
		out = append(out, query{sql: sql, args: ps.args, table: t.quoted, msgID: id, lsn: lsn, expect: -1})
	}
	return out
}

// settable lists the columns an UPDATE may set: not the key (matched, not
// changed), not generated, not identity-always (PostgreSQL refuses them).
func settable(t *targetTable, cols, keyCols []string) []string {
	var out []string
	for _, c := range cols {
		tc := t.columns[c]
		if !contains(keyCols, c) && !tc.skip && !tc.identityAlways {
			out = append(out, c)
		}
	}
	return out
}

func insertInto(t *targetTable, names []string) string {
	sql := "INSERT INTO " + t.quoted + " (" + quoteList(names) + ")"
	for _, c := range names {
		if t.columns[c].identityAlways {
			// Keep the source's value instead of drawing a new one.
			return sql + " OVERRIDING SYSTEM VALUE"
		}
	}
	return sql
}

func castColumns(t *targetTable, names []string) string {
	var out []string
	for i, c := range names {
		out = append(out, cast(t, c, "u.p"+strconv.Itoa(i+1)))
	}
	return strings.Join(out, ", ")
}

// rowText is the text a row of columns names compares by, computed the same
// way from the target's values and from the event's: every value through the
// target type's output function, so that types without equality (xml, json)
// match too, and a hash join finds the rows.
func rowText(alias string, names []string) string {
	var out []string
	for _, c := range names {
		out = append(out, alias+"."+event.QuoteIdent(c)+"::text")
	}
	return "ROW(" + strings.Join(out, ", ") + ")::text"
}

func paramRowText(t *targetTable, names []string, exprs []string) string {
	var out []string
	for i, c := range names {
		out = append(out, cast(t, c, exprs[i])+"::text")
	}
	return "ROW(" + strings.Join(out, ", ") + ")::text"
}

// unkeyedRunQuery writes a run of inserts, or of deletes, on a table without
// key. The deletes are matched in one pass over the table: each distinct old
// row removes as many target rows as the run deletes copies of it.
func unkeyedRunQuery(tp *tablePlan) query {
	t := tp.t
	cols := make([][]*string, len(tp.cols)+len(tp.setCols))
	for _, row := range tp.rows {
		for i := range cols {
			cols[i] = append(cols[i], row[i])
		}
	}
	var ps params
	q := query{table: t.quoted, msgID: tp.msgID, lsn: tp.lsn, expect: -1}
	if tp.kind == event.KindInsert {
		q.sql = insertInto(t, tp.cols) + " SELECT " + castColumns(t, tp.cols) + " FROM " + ps.unnest(cols)
		q.args = ps.args
		return q
	}
	exprs := make([]string, len(tp.cols))
	for i := range tp.cols {
		exprs[i] = "u.p" + strconv.Itoa(i+1)
	}
	if tp.kind == event.KindUpdate {
		return unkeyedUpdateQuery(tp, q, exprs, cols)
	}
	q.sql = fmt.Sprintf(`WITH o AS (SELECT k, count(*) AS n FROM (SELECT %s AS k FROM %s) s GROUP BY k),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, o.n, row_number() OVER (PARTITION BY o.k) AS rn FROM %s AS t JOIN o ON %s = o.k)
DELETE FROM %s AS t USING m WHERE t.tableoid = m.toid AND t.ctid = m.tid AND m.rn <= m.n`,
		paramRowText(t, tp.cols, exprs), ps.unnest(cols), t.quoted, rowText("t", tp.cols), t.quoted)
	q.args = ps.args
	q.expect = len(tp.rows)
	return q
}

// unkeyedUpdateQuery writes a run of updates on a table without key in one
// pass over the table. Each update changes exactly one row equal to its old
// row: the n-th update of a given old row takes the n-th target row equal to
// it, so duplicate rows are respected.
func unkeyedUpdateQuery(tp *tablePlan, q query, exprs []string, cols [][]*string) query {
	t := tp.t
	var ps params
	assign := make([]string, len(tp.setCols))
	values := make([]string, len(tp.setCols))
	for i, c := range tp.setCols {
		values[i] = "u.p" + strconv.Itoa(len(tp.cols)+i+1) + " AS v" + strconv.Itoa(i+1)
		assign[i] = event.QuoteIdent(c) + " = " + cast(t, c, "o.v"+strconv.Itoa(i+1))
	}
	k := paramRowText(t, tp.cols, exprs)
	q.sql = fmt.Sprintf(`WITH o AS (SELECT %s AS k, row_number() OVER (PARTITION BY %s ORDER BY u.ord) AS rn, %s FROM %s),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, %s AS k, row_number() OVER (PARTITION BY %s) AS rn FROM %s AS t WHERE %s IN (SELECT k FROM o))
UPDATE %s AS t SET %s FROM m JOIN o ON o.k = m.k AND o.rn = m.rn WHERE t.tableoid = m.toid AND t.ctid = m.tid`,
		k, k, strings.Join(values, ", "), ps.unnestOrdinal(cols),
		rowText("t", tp.cols), rowText("t", tp.cols), t.quoted, rowText("t", tp.cols),
		t.quoted, strings.Join(assign, ", "))
	q.args = ps.args
	q.expect = len(tp.rows)
	return q
}

// keyChangeQuery moves a row to a new key.
func keyChangeQuery(t *targetTable, keyCols []string, ev *event.Event, msgID pulsar.MessageID) query {
	var ps params
	var assign, conds []string
	for _, c := range writable(t, ev.New, ev.Columns) {
		if tc := t.columns[c]; !tc.identityAlways {
			assign = append(assign, event.QuoteIdent(c)+" = "+cast(t, c, ps.add(ev.New[c])))
		}
	}
	for _, k := range keyCols {
		conds = append(conds, "t."+event.QuoteIdent(k)+" = "+cast(t, k, ps.add(ev.Old[k])))
	}
	return query{
		sql:   fmt.Sprintf("UPDATE %s AS t SET %s WHERE %s", t.quoted, strings.Join(assign, ", "), strings.Join(conds, " AND ")),
		args:  ps.args,
		table: t.quoted, msgID: msgID, lsn: ev.LSN, expect: 1,
	}
}
