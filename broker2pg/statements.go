package broker2pg

import (
	"slices"
	"strconv"
	"strings"

	"github.com/pgtandem/pgtandem/event"
)

// The pieces the planned statements are built from: numbered parameters,
// unnest() over text arrays, casts to the target's column types, and which
// columns a statement may write.

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

func castColumns(t *targetTable, names []string) string {
	var out []string
	for i, c := range names {
		out = append(out, cast(t, c, "u.p"+strconv.Itoa(i+1)))
	}
	return strings.Join(out, ", ")
}

func insertInto(t *targetTable, names []string) string {
	sql := "INSERT INTO " + t.quoted + " (" + quoteList(names) + ")"
	if slices.ContainsFunc(names, func(c string) bool { return t.columns[c].identityAlways }) {
		// Keep the source's value instead of drawing a new one.
		return sql + " OVERRIDING SYSTEM VALUE"
	}
	return sql
}

func quoteList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = event.QuoteIdent(n)
	}
	return strings.Join(quoted, ", ")
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

// settable lists the columns an UPDATE may set: not the key (matched, not
// changed), not generated, not identity-always (PostgreSQL refuses them).
func settable(t *targetTable, cols, keyCols []string) []string {
	var out []string
	for _, c := range cols {
		tc := t.columns[c]
		if !slices.Contains(keyCols, c) && !tc.skip && !tc.identityAlways {
			out = append(out, c)
		}
	}
	return out
}
