package broker2pg

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/pgtandem/pgtandem/event"
)

// rowState is the net effect of a segment's changes on one key.
type rowState struct {
	key   []*string
	del   bool
	write event.Kind // "", insert or update
	cols  []string   // columns written, in event order
	vals  map[string]*string
	msgID pulsar.MessageID
	lsn   event.LSN
	// existed tells that the row was on the target before the segment: its
	// first change in it was not an INSERT.
	existed bool
}

// addKeyed plans a change of a table matched by its key columns keyCols:
// it is compacted into the net effect on its key, except an UPDATE that
// changes the key, which becomes a statement of its own.
func (p *plan) addKeyed(t *targetTable, sh *shape, ev *event.Event, msgID pulsar.MessageID) {
	keyCols := sh.keyCols
	tp := p.tablePlan(t, true, keyCols)
	switch ev.Kind {
	case event.KindInsert:
		rs := tp.state(keyValues(keyCols, ev.New, nil), msgID, ev.LSN, false)
		rs.write = event.KindInsert
		rs.cols, rs.vals = writableOf(t, sh, ev.New, ev.Unchanged, ev.Columns), ev.New
	case event.KindUpdate:
		newKey := keyValues(keyCols, ev.New, ev.Old)
		if ev.Old != nil && keyString(keyValues(keyCols, ev.Old, nil)) != keyString(newKey) {
			p.closeSegment()
			p.done = append(p.done, keyChangeQuery(t, keyCols, ev, msgID))
			return
		}
		rs := tp.state(newKey, msgID, ev.LSN, true)
		cols := writableOf(t, sh, ev.New, ev.Unchanged, ev.Columns)
		if rs.write == "" {
			// The first write of the row in the segment: its event's row
			// is the plan's from here on, as an INSERT's is.
			rs.write, rs.cols, rs.vals = event.KindUpdate, cols, ev.New
			return
		}
		for _, name := range cols {
			if _, seen := rs.vals[name]; !seen {
				rs.cols = append(rs.cols, name)
			}
			rs.vals[name] = ev.New[name]
		}
	case event.KindDelete:
		rs := tp.state(keyValues(keyCols, ev.Old, nil), msgID, ev.LSN, true)
		rs.del, rs.write, rs.cols, rs.vals = true, "", nil, nil
	}
}

func (tp *tablePlan) state(key []*string, msgID pulsar.MessageID, lsn event.LSN, existed bool) *rowState {
	k := keyString(key)
	rs, ok := tp.keys[k]
	if !ok {
		rs = &rowState{key: key, msgID: msgID, lsn: lsn, existed: existed}
		tp.keys[k] = rs
		tp.order = append(tp.order, rs)
	}
	return rs
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

// keyedQueries writes a keyed table's segment: deletes, updates grouped by
// their SET columns, inserts grouped by their columns.
func keyedQueries(tp *tablePlan) []query {
	t := tp.t
	var out []query
	first := func(rs []*rowState) (pulsar.MessageID, event.LSN) { return rs[0].msgID, rs[0].lsn }
	var dels []*rowState
	existing := 0
	updates := map[string][]*rowState{}
	inserts := map[string][]*rowState{}
	var updOrder, insOrder []string
	// Rows written from whole rows share their column list (the shape's),
	// whose signature is then worked out once.
	type colsKey struct {
		first *string
		n     int
		kind  event.Kind
	}
	sigs := map[colsKey]string{}
	signature := func(rs *rowState, sig func() string) string {
		if len(rs.cols) == 0 {
			return sig()
		}
		k := colsKey{&rs.cols[0], len(rs.cols), rs.write}
		s, ok := sigs[k]
		if !ok {
			s = sig()
			sigs[k] = s
		}
		return s
	}
	for _, rs := range tp.order {
		if rs.del {
			dels = append(dels, rs)
			if rs.existed {
				existing++
			}
		}
		switch rs.write {
		case event.KindUpdate:
			sig := signature(rs, func() string {
				return strings.Join(settable(t, rs.cols, tp.keyCols), "\x00") + "\x01" + strings.Join(identityColumns(t, rs.cols, tp.keyCols), "\x00")
			})
			if _, ok := updates[sig]; !ok {
				updOrder = append(updOrder, sig)
			}
			updates[sig] = append(updates[sig], rs)
		case event.KindInsert:
			sig := signature(rs, func() string { return strings.Join(rs.cols, "\x00") })
			if _, ok := inserts[sig]; !ok {
				insOrder = append(insOrder, sig)
			}
			inserts[sig] = append(inserts[sig], rs)
		}
	}
	keyMatch := func(offset int) string {
		var conds []string
		for i, k := range tp.keyCols {
			conds = append(conds, keyEquals(t, k, "u.p"+strconv.Itoa(offset+i+1)))
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
		// A row inserted and deleted in the segment is not on the target.
		out = append(out, query{sql: sql, args: ps.args, table: t.quoted, msgID: id, lsn: lsn, expect: existing})
	}
	// identityMoves writes the rows whose identity-always columns beside
	// the key the source changed: UPDATE cannot set those, so each such
	// row is deleted and inserted again. The old row of an UPDATE holds
	// only the key and cannot tell which rows that are: the target's
	// values are compared with the new ones, at the price of one more
	// index lookup per row of such tables, and a delete and insert only
	// for the rows whose identity changed. The statement goes after the
	// UPDATE of the other columns, whose values it keeps.
	identityMoves := func(rows []*rowState, ids []string) {
		if len(ids) == 0 {
			return
		}
		cols := keyColumns(rows)
		set := map[string]string{}
		var differs []string
		for i, c := range ids {
			vals := make([]*string, len(rows))
			for j, rs := range rows {
				vals[j] = rs.vals[c]
			}
			cols = append(cols, vals)
			p := "u.p" + strconv.Itoa(len(tp.keyCols)+i+1)
			set[c] = p
			differs = append(differs, identityDiffers(t, c, p))
		}
		var ps params
		sql := replaceSQL(t, nil, ps.unnest(cols), keyMatch(0)+" AND ("+strings.Join(differs, " OR ")+")", set)
		id, lsn := first(rows)
		out = append(out, query{sql: sql, args: ps.args, table: t.quoted, msgID: id, lsn: lsn, expect: -1})
	}
	for _, sig := range updOrder {
		rows := updates[sig]
		set := settable(t, rows[0].cols, tp.keyCols)
		if len(set) == 0 {
			identityMoves(rows, identityColumns(t, rows[0].cols, tp.keyCols))
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
		identityMoves(rows, identityColumns(t, rows[0].cols, tp.keyCols))
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
		if t.conflictTarget(tp.keyCols) != "" {
			// A row already there (the overlap of a snapshot) kept its
			// identity-always columns through ON CONFLICT DO UPDATE.
			identityMoves(rows, identityColumns(t, names, tp.keyCols))
		}
	}
	return out
}

// keyChangeQuery moves a row to a new key. In a table with an
// identity-always column, which UPDATE cannot set and which may be the key
// or may have changed beside it (the old row holds only the key), the row
// is deleted and inserted again instead (see replaceSQL).
func keyChangeQuery(t *targetTable, keyCols []string, ev *event.Event, msgID pulsar.MessageID) query {
	written := writable(t, ev.New, ev.Columns)
	if len(identityColumns(t, written, nil)) > 0 {
		var ps params
		var conds []string
		for _, k := range keyCols {
			conds = append(conds, keyEquals(t, k, ps.add(ev.Old[k])))
		}
		set := map[string]string{}
		for _, c := range written {
			set[c] = ps.add(ev.New[c])
		}
		return query{
			sql:   replaceSQL(t, nil, "", strings.Join(conds, " AND "), set),
			args:  ps.args,
			table: t.quoted, msgID: msgID, lsn: ev.LSN, expect: 1,
		}
	}
	var ps params
	var assign, conds []string
	for _, c := range written {
		assign = append(assign, event.QuoteIdent(c)+" = "+cast(t, c, ps.add(ev.New[c])))
	}
	for _, k := range keyCols {
		conds = append(conds, keyEquals(t, k, ps.add(ev.Old[k])))
	}
	return query{
		sql:   fmt.Sprintf("UPDATE %s AS t SET %s WHERE %s", t.quoted, strings.Join(assign, ", "), strings.Join(conds, " AND ")),
		args:  ps.args,
		table: t.quoted, msgID: msgID, lsn: ev.LSN, expect: 1,
	}
}
