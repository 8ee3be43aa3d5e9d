package broker2pg

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// targetTable is what the apply needs to know of one table on the target.
// Columns are mapped by name: the target may have more columns than the
// source, never fewer.
type targetTable struct {
	name   event.TableName
	quoted string
	oid    uint32
	// partitioned tables are truncated with their partitions, other tables
	// alone (see plan.truncate).
	partitioned bool
	columns     map[string]*targetColumn
	// order lists the columns in the table's order.
	order []string
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
	// base is the ultimate base type of a domain column, "" for other
	// columns: keys are compared as it (catalog.DomainBaseSQL says why).
	base string
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
	// referencing finds the foreign keys that keep tables from being
	// truncated alone; it asks the target every time, as an operator
	// unblocks a TRUNCATE by dropping one.
	referencing func(ctx context.Context, tables []*targetTable) ([]foreignKey, error)
}

func newSchemaCache(conn *pgx.Conn, idle func() error) *schemaCache {
	c := &schemaCache{conn: conn, tables: map[event.TableName]*targetTable{}, idle: idle}
	c.referencing = c.loadReferencing
	return c
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
	var partitioned bool
	if err := c.conn.QueryRow(ctx, `SELECT c.oid, coalesce(c.relkind = 'p', false) FROM (SELECT to_regclass($1) AS oid) r LEFT JOIN pg_class c ON c.oid = r.oid`, quoted).Scan(&oid, &partitioned); err != nil {
		return nil, fmt.Errorf("look up target table %s: %w", quoted, err)
	}
	if oid == nil {
		return nil, &BlockedError{Table: quoted, Reason: "the table does not exist on the target; create it with the source's definition"}
	}
	t := &targetTable{name: name, quoted: quoted, oid: *oid, partitioned: partitioned, columns: map[string]*targetColumn{}}
	rows, err := c.conn.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', a.attidentity = 'a',
			coalesce(`+catalog.DomainBaseSQL("a.atttypid")+`, '')
		FROM pg_attribute a
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, *oid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", quoted, err)
	}
	for rows.Next() {
		var name string
		col := &targetColumn{}
		if err := rows.Scan(&name, &col.cast, &col.skip, &col.identityAlways, &col.base); err != nil {
			return nil, fmt.Errorf("read columns of %s: %w", quoted, err)
		}
		col.quoted = event.QuoteIdent(name)
		t.columns[name] = col
		t.order = append(t.order, name)
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

// foreignKey is a foreign key of the target that references a table the
// source truncated, from a table the source did not truncate (a table or a
// constraint that exists only on the target): TRUNCATE without CASCADE
// fails on it, and CASCADE would empty a table the source never emptied.
type foreignKey struct {
	// from is the referencing table, name the constraint, to the
	// referenced table, all quoted.
	from, name, to string
}

// loadReferencing returns the foreign keys that make TRUNCATE of tables
// fail on the target: those that reference a relation the TRUNCATE
// empties (a table, or each partition of a partitioned table) from a
// relation it does not empty, as PostgreSQL's heap_truncate_check_FKs
// finds them.
func (c *schemaCache) loadReferencing(ctx context.Context, tables []*targetTable) ([]foreignKey, error) {
	if err := c.idle(); err != nil {
		return nil, err
	}
	oids := make([]uint32, len(tables))
	partitioned := make([]bool, len(tables))
	for i, t := range tables {
		oids[i], partitioned[i] = t.oid, t.partitioned
	}
	rows, err := c.conn.Query(ctx, `
		WITH listed AS (SELECT * FROM unnest($1::oid[], $2::bool[]) AS l(relid, partitioned)),
		emptied AS (
			SELECT relid FROM listed WHERE NOT partitioned
			UNION SELECT p.relid FROM listed l, pg_partition_tree(l.relid) p WHERE l.partitioned)
		SELECT DISTINCT fn.nspname, fr.relname, k.conname, tn.nspname, tr.relname
		FROM pg_constraint k
		JOIN pg_class fr ON fr.oid = k.conrelid JOIN pg_namespace fn ON fn.oid = fr.relnamespace
		JOIN pg_class tr ON tr.oid = k.confrelid JOIN pg_namespace tn ON tn.oid = tr.relnamespace
		WHERE k.contype = 'f' AND k.confrelid IN (SELECT relid FROM emptied) AND k.conrelid NOT IN (SELECT relid FROM emptied)
		-- a partition's copy of a constraint that is itself listed
		AND NOT EXISTS (SELECT FROM pg_constraint pk WHERE pk.oid = k.conparentid
			AND pk.confrelid IN (SELECT relid FROM emptied) AND pk.conrelid NOT IN (SELECT relid FROM emptied))
		ORDER BY 1, 2, 3, 4, 5`, oids, partitioned)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys referencing the truncated tables: %w", err)
	}
	var out []foreignKey
	for rows.Next() {
		var fromSchema, fromTable, name, toSchema, toTable string
		if err := rows.Scan(&fromSchema, &fromTable, &name, &toSchema, &toTable); err != nil {
			return nil, fmt.Errorf("read foreign keys referencing the truncated tables: %w", err)
		}
		out = append(out, foreignKey{
			from: event.TableName{Schema: fromSchema, Table: fromTable}.String(),
			name: event.QuoteIdent(name),
			to:   event.TableName{Schema: toSchema, Table: toTable}.String(),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read foreign keys referencing the truncated tables: %w", err)
	}
	return out, nil
}
