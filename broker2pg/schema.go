package broker2pg

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
)

// targetTable is what the apply needs to know of one table on the target.
// Columns are mapped by name: the target may have more columns than the
// source, never fewer.
type targetTable struct {
	name    event.TableName
	quoted  string
	columns map[string]*targetColumn
	// uniqueKeys are the column sets (sorted) of the unique indexes an
	// INSERT ... ON CONFLICT can name.
	uniqueKeys [][]string
}

type targetColumn struct {
	quoted string
	// cast is the column's type as format_type() prints it in the apply
	// session: values are cast from text to it, so every type goes through
	// its own input function and round-trips byte for byte.
	cast string
	// skip marks generated columns, which are never written.
	skip bool
	// identityAlways needs OVERRIDING SYSTEM VALUE so the source's value is
	// kept, and may not appear in an UPDATE's SET list.
	identityAlways bool
}

// schemaCache loads target tables on first use; it is dropped with the
// session, so a fixed schema is seen on the next attempt.
type schemaCache struct {
	conn   *pgx.Conn
	tables map[event.TableName]*targetTable
	// idle waits until the connection is free (no flush in flight) before
	// a table is looked up.
	idle func() error
}

func newSchemaCache(conn *pgx.Conn, idle func() error) *schemaCache {
	return &schemaCache{conn: conn, tables: map[event.TableName]*targetTable{}, idle: idle}
}

// table returns the target table of an event's table, or a *BlockedError
// naming it when the target lacks it.
func (c *schemaCache) table(ctx context.Context, name event.TableName) (*targetTable, error) {
	if t, ok := c.tables[name]; ok {
		return t, nil
	}
	if err := c.idle(); err != nil {
		return nil, err
	}
	quoted := name.String()
	var oid *uint32
	if err := c.conn.QueryRow(ctx, `SELECT to_regclass($1)::oid`, quoted).Scan(&oid); err != nil {
		return nil, fmt.Errorf("look up target table %s: %w", quoted, err)
	}
	if oid == nil {
		return nil, &BlockedError{Table: quoted, Reason: "the table does not exist on the target; create it with the source's definition"}
	}
	t := &targetTable{name: name, quoted: quoted, columns: map[string]*targetColumn{}}
	rows, err := c.conn.Query(ctx, `
		SELECT attname, format_type(atttypid, atttypmod), attgenerated <> '', attidentity = 'a'
		FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, *oid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", quoted, err)
	}
	for rows.Next() {
		var name string
		col := &targetColumn{}
		if err := rows.Scan(&name, &col.cast, &col.skip, &col.identityAlways); err != nil {
			return nil, fmt.Errorf("read columns of %s: %w", quoted, err)
		}
		col.quoted = event.QuoteIdent(name)
		t.columns[name] = col
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", quoted, err)
	}
	rows, err = c.conn.Query(ctx, `
		SELECT array_agg(a.attname::text ORDER BY a.attname)
		FROM pg_index i
		CROSS JOIN LATERAL generate_series(0, i.indnkeyatts - 1) AS k(n)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n]
		WHERE i.indrelid = $1 AND i.indisunique AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL
		GROUP BY i.indexrelid`, *oid)
	if err != nil {
		return nil, fmt.Errorf("read unique indexes of %s: %w", quoted, err)
	}
	if t.uniqueKeys, err = pgx.CollectRows(rows, pgx.RowTo[[]string]); err != nil {
		return nil, fmt.Errorf("read unique indexes of %s: %w", quoted, err)
	}
	c.tables[name] = t
	return t, nil
}

// column returns a column of the table named by an event, or a
// *BlockedError naming the column the target lacks.
func (t *targetTable) column(name string) (*targetColumn, error) {
	col, ok := t.columns[name]
	if !ok {
		return nil, &BlockedError{Table: t.quoted, Column: event.QuoteIdent(name), Reason: "the column does not exist on the target; add it with the source's type"}
	}
	return col, nil
}

// conflictTarget returns the ON CONFLICT column list for key columns, or ""
// when no unique index of the target covers exactly those columns.
func (t *targetTable) conflictTarget(keys []string) string {
	sorted := slices.Sorted(slices.Values(keys))
	for _, u := range t.uniqueKeys {
		if slices.Equal(u, sorted) {
			return quoteList(keys)
		}
	}
	return ""
}
