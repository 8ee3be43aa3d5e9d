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

// keyEquals compares column col of the target row t with expr, a text
// value: as the column's base type when it is a domain (see
// targetColumn.base), so that a domain over an enum compares too.
func keyEquals(t *targetTable, col, expr string) string {
	left, right := compared(t, col, expr)
	return left + " = " + right
}

// identityDiffers tells whether identity column col of the target row t
// differs from expr, a text value.
func identityDiffers(t *targetTable, col, expr string) string {
	left, right := compared(t, col, expr)
	return left + " IS DISTINCT FROM " + right
}

func compared(t *targetTable, col, expr string) (left, right string) {
	tc := t.columns[col]
	left, right = "t."+tc.quoted, cast(t, col, expr)
	if tc.base != "" {
		left, right = left+"::"+tc.base, right+"::"+tc.base
	}
	return left, right
}

// replaceSQL moves rows that UPDATE cannot write, as it may not set an
// identity-always column: it deletes the rows of t (alias t) that using
// and where match, and inserts them again in the same statement with the
// columns of set taken from their expressions (text values, cast to the
// column's type) and every other column the target writes from the deleted
// row, so that unchanged TOAST values and target-only columns are kept;
// generated columns are computed again. ctes are WITH items using and
// where may refer to. The statement reports one row per row moved.
//
// The apply session runs with session_replication_role = replica, so
// neither user triggers nor foreign keys act on the delete (no ON DELETE
// CASCADE, no NO ACTION check), as for the UPDATE it stands for.
func replaceSQL(t *targetTable, ctes []string, using, where string, set map[string]string) string {
	var cols, returning, values []string
	for _, c := range t.order {
		tc := t.columns[c]
		if tc.skip {
			continue
		}
		alias := "c" + strconv.Itoa(len(cols)+1)
		cols = append(cols, c)
		if expr, ok := set[c]; ok {
			returning = append(returning, cast(t, c, expr)+" AS "+alias)
		} else {
			returning = append(returning, "t."+tc.quoted+" AS "+alias)
		}
		values = append(values, "d."+alias)
	}
	del := "DELETE FROM " + t.quoted + " AS t"
	if using != "" {
		del += " USING " + using
	}
	del += " WHERE " + where + " RETURNING " + strings.Join(returning, ", ")
	with := append(slices.Clone(ctes), "d AS ("+del+")")
	return "WITH " + strings.Join(with, ",\n") + "\n" + insertInto(t, cols) + " SELECT " + strings.Join(values, ", ") + " FROM d"
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
// changed), not generated, not identity-always (PostgreSQL refuses them:
// see replaceSQL).
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

// identityColumns lists the identity-always columns among cols, minus
// keyCols.
func identityColumns(t *targetTable, cols, keyCols []string) []string {
	var out []string
	for _, c := range cols {
		if t.columns[c].identityAlways && !slices.Contains(keyCols, c) {
			out = append(out, c)
		}
	}
	return out
}
