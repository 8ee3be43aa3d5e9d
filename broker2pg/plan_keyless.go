package broker2pg

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/pgtandem/pgtandem/event"
)

// addKeyless plans a change of a table matched by whole rows (REPLICA
// IDENTITY FULL).
func (p *plan) addKeyless(t *targetTable, sh *shape, ev *event.Event, msgID pulsar.MessageID) error {
	switch ev.Kind {
	case event.KindUpdate:
		p.addKeylessUpdate(t, ev, msgID)
		return nil
	case event.KindInsert:
		return p.appendRun(t, ev.Kind, writableOf(t, sh, ev.New, ev.Unchanged, ev.Columns), ev.New, msgID, ev.LSN)
	default:
		return p.appendRun(t, ev.Kind, present(ev.Old, ev.OldUnchanged, ev.Columns), ev.Old, msgID, ev.LSN)
	}
}

// addKeylessUpdate adds an update of a table matched by whole rows to a
// run of updates with the same matched and set columns, applied by one
// statement: a large transaction updating rows of a keyless table must not
// cost a scan of the table per row. An update that changes an
// identity-always column, which UPDATE cannot set, goes into a run that
// deletes and inserts the rows again (see replaceSQL); the old row tells
// which updates do.
func (p *plan) addKeylessUpdate(t *targetTable, ev *event.Event, msgID pulsar.MessageID) {
	match := present(ev.Old, ev.OldUnchanged, ev.Columns)
	set := settable(t, writable(t, ev.New, ev.Columns), nil)
	replace := identityChanged(t, ev)
	if replace {
		set = writable(t, ev.New, ev.Columns)
	}
	if len(set) == 0 {
		return // only columns the target computes itself changed
	}
	vals := make([]*string, 0, len(match)+len(set))
	for _, c := range match {
		vals = append(vals, ev.Old[c])
	}
	tp := p.tablePlan(t, false, nil)
	if len(tp.rows) > 0 && (tp.kind != event.KindUpdate || tp.replace != replace || !slices.Equal(tp.cols, match) || !slices.Equal(tp.setCols, set) || tp.newRows[keyString(vals)]) {
		p.closeSegment()
		tp = p.tablePlan(t, false, nil)
	}
	if len(tp.rows) == 0 {
		tp.kind, tp.cols, tp.setCols, tp.msgID, tp.lsn, tp.newRows = event.KindUpdate, match, set, msgID, ev.LSN, map[string]bool{}
		tp.replace = replace
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

// identityChanged tells whether an update gives an identity-always column
// another value than its old row holds.
func identityChanged(t *targetTable, ev *event.Event) bool {
	for _, c := range ev.Columns {
		if !t.columns[c.Name].identityAlways {
			continue
		}
		oldVal, inOld := ev.Old[c.Name]
		newVal, inNew := ev.New[c.Name]
		if !inOld || !inNew {
			continue
		}
		if (oldVal == nil) != (newVal == nil) || oldVal != nil && *oldVal != *newVal {
			return true
		}
	}
	return false
}

// appendRun adds a row to the run of inserts, or of deletes, of a table
// without key; a change of another kind or of other columns starts a new
// statement.
func (p *plan) appendRun(t *targetTable, kind event.Kind, cols []string, row map[string]*string, msgID pulsar.MessageID, lsn event.LSN) error {
	tp := p.tablePlan(t, false, nil)
	if len(tp.rows) > 0 && (tp.kind != kind || !slices.Equal(tp.cols, cols)) {
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

// present lists the columns of an old row that can be matched: those sent,
// minus unchanged TOAST values the event does not carry.
func present(row map[string]*string, unchanged []string, cols []event.Column) []string {
	var out []string
	for _, c := range cols {
		if _, ok := row[c.Name]; ok && !slices.Contains(unchanged, c.Name) {
			out = append(out, c.Name)
		}
	}
	return out
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

// keylessRunQuery writes a run of inserts, or of deletes, on a table without
// key. The deletes are matched in one pass over the table: each distinct old
// row removes as many target rows as the run deletes copies of it.
func keylessRunQuery(tp *tablePlan) query {
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
		return keylessUpdateQuery(tp, q, exprs, cols)
	}
	q.sql = fmt.Sprintf(`WITH o AS (SELECT k, count(*) AS n FROM (SELECT %s AS k FROM %s) s GROUP BY k),
m AS (SELECT t.tableoid AS toid, t.ctid AS tid, o.n, row_number() OVER (PARTITION BY o.k) AS rn FROM %s AS t JOIN o ON %s = o.k)
DELETE FROM %s AS t USING m WHERE t.tableoid = m.toid AND t.ctid = m.tid AND m.rn <= m.n`,
		paramRowText(t, tp.cols, exprs), ps.unnest(cols), t.quoted, rowText("t", tp.cols), t.quoted)
	q.args = ps.args
	q.expect = len(tp.rows)
	return q
}

// keylessUpdateQuery writes a run of updates on a table without key in one
// pass over the table. Each update changes exactly one row equal to its old
// row: the n-th update of a given old row takes the n-th target row equal to
// it, so duplicate rows are respected.
func keylessUpdateQuery(tp *tablePlan, q query, exprs []string, cols [][]*string) query {
	t := tp.t
	var ps params
	assign := make([]string, len(tp.setCols))
	values := make([]string, len(tp.setCols))
	for i, c := range tp.setCols {
		values[i] = "u.p" + strconv.Itoa(len(tp.cols)+i+1) + " AS v" + strconv.Itoa(i+1)
		assign[i] = event.QuoteIdent(c) + " = " + cast(t, c, "o.v"+strconv.Itoa(i+1))
	}
	k := paramRowText(t, tp.cols, exprs)
	o := fmt.Sprintf(`o AS (SELECT %s AS k, row_number() OVER (PARTITION BY %s ORDER BY u.ord) AS rn, %s FROM %s)`,
		k, k, strings.Join(values, ", "), ps.unnestOrdinal(cols))
	m := fmt.Sprintf(`m AS (SELECT t.tableoid AS toid, t.ctid AS tid, %s AS k, row_number() OVER (PARTITION BY %s) AS rn FROM %s AS t WHERE %s IN (SELECT k FROM o))`,
		rowText("t", tp.cols), rowText("t", tp.cols), t.quoted, rowText("t", tp.cols))
	using, where := "m JOIN o ON o.k = m.k AND o.rn = m.rn", "t.tableoid = m.toid AND t.ctid = m.tid"
	if tp.replace {
		set := map[string]string{}
		for i, c := range tp.setCols {
			set[c] = "o.v" + strconv.Itoa(i+1)
		}
		q.sql = replaceSQL(t, []string{o, m}, using, where, set)
	} else {
		q.sql = fmt.Sprintf("WITH %s,\n%s\nUPDATE %s AS t SET %s FROM %s WHERE %s", o, m, t.quoted, strings.Join(assign, ", "), using, where)
	}
	q.args = ps.args
	q.expect = len(tp.rows)
	return q
}
