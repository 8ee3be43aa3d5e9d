package verify

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	pgtcatalog "github.com/pgtandem/pgtandem/internal/catalog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// table is one table as a server describes it.
type table struct {
	Schema, Name string
	Columns      []column
	// Key is the primary key's columns in index order; empty without one.
	Key []string
}

type column struct {
	Name, Type string
	// Base is the ultimate base type of a domain column, "" for others: a
	// key is ranged over as it (catalog.DomainBaseSQL says why).
	Base string
}

func (t *table) qualified() string {
	return pgx.Identifier{t.Schema, t.Name}.Sanitize()
}

func (t *table) id() string { return t.Schema + "." + t.Name }

// keyOrder returns the expression and type by which rows are ranged over
// column name: the column itself, or for a domain its cast to the base type.
func (t *table) keyOrder(name string) (expr, typ string) {
	expr = pgx.Identifier{name}.Sanitize()
	i := slices.IndexFunc(t.Columns, func(c column) bool { return c.Name == name })
	if i < 0 {
		return expr, ""
	}
	if c := t.Columns[i]; c.Base != "" {
		return expr + "::" + c.Base, c.Base
	}
	return expr, t.Columns[i].Type
}

func (t *table) columnType(name string) (string, bool) {
	i := slices.IndexFunc(t.Columns, func(c column) bool { return c.Name == name })
	if i < 0 {
		return "", false
	}
	return t.Columns[i].Type, true
}

// catalog is the schema of one database, as far as verify compares it.
type catalog struct {
	tables    map[string]*table
	sequences map[string]string // schema.name → data type
}

// Schemas pgtandem never compares: the catalogs, and its own bookkeeping,
// which differs by design between source and target.
const skipSchemas = `('pg_catalog', 'information_schema', 'pgtandem')`

func readCatalog(ctx context.Context, pool *pgxpool.Pool) (*catalog, error) {
	cat := &catalog{tables: map[string]*table{}, sequences: map[string]string{}}
	rows, err := pool.Query(ctx, `
		SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), coalesce(`+pgtcatalog.DomainBaseSQL("a.atttypid")+`, '')
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
		  AND n.nspname NOT IN `+skipSchemas+` AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		ORDER BY n.nspname, c.relname, a.attnum`)
	if err != nil {
		return nil, fmt.Errorf("read tables: %w", err)
	}
	var schema, name, col, typ, base string
	_, err = pgx.ForEachRow(rows, []any{&schema, &name, &col, &typ, &base}, func() error {
		id := schema + "." + name
		t := cat.tables[id]
		if t == nil {
			t = &table{Schema: schema, Name: name}
			cat.tables[id] = t
		}
		t.Columns = append(t.Columns, column{Name: col, Type: typ, Base: base})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read tables: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT n.nspname, c.relname, a.attname
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
		WHERE i.indisprimary AND n.nspname NOT IN `+skipSchemas+`
		ORDER BY n.nspname, c.relname, k.ord`)
	if err != nil {
		return nil, fmt.Errorf("read primary keys: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&schema, &name, &col}, func() error {
		if t := cat.tables[schema+"."+name]; t != nil {
			t.Key = append(t.Key, col)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read primary keys: %w", err)
	}
	rows, err = pool.Query(ctx, `SELECT schemaname, sequencename, data_type::text FROM pg_sequences WHERE schemaname NOT IN `+skipSchemas)
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&schema, &name, &typ}, func() error {
		cat.sequences[schema+"."+name] = typ
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	return cat, nil
}

// SchemaDiff is one difference of structure between source and target.
type SchemaDiff struct {
	Object string `json:"object"`
	Issue  string `json:"issue"`
}

// compareSchemas lists the structural differences and returns the tables
// whose data can be compared (present on both sides), restricted to only
// when it is not empty.
func compareSchemas(src, dst *catalog, only map[string]bool) ([]SchemaDiff, []*table, []*table) {
	var diffs []SchemaDiff
	var both []*table
	var targets []*table
	for _, id := range slices.Sorted(maps.Keys(src.tables)) {
		if len(only) > 0 && !only[id] {
			continue
		}
		s, d := src.tables[id], dst.tables[id]
		if d == nil {
			diffs = append(diffs, SchemaDiff{Object: "table " + id, Issue: "missing on target"})
			continue
		}
		for _, c := range s.Columns {
			typ, ok := d.columnType(c.Name)
			switch {
			case !ok:
				diffs = append(diffs, SchemaDiff{Object: "column " + id + "." + c.Name, Issue: "missing on target"})
			case typ != c.Type:
				diffs = append(diffs, SchemaDiff{Object: "column " + id + "." + c.Name, Issue: fmt.Sprintf("type %s on source, %s on target", c.Type, typ)})
			}
		}
		if !slices.Equal(s.Key, d.Key) {
			diffs = append(diffs, SchemaDiff{Object: "table " + id, Issue: fmt.Sprintf("primary key (%s) on source, (%s) on target", strings.Join(s.Key, ", "), strings.Join(d.Key, ", "))})
		}
		both = append(both, s)
		targets = append(targets, d)
	}
	for id := range dst.tables {
		if src.tables[id] == nil && (len(only) == 0 || only[id]) {
			diffs = append(diffs, SchemaDiff{Object: "table " + id, Issue: "only on target"})
		}
	}
	for id, typ := range src.sequences {
		switch dtyp, ok := dst.sequences[id]; {
		case !ok:
			diffs = append(diffs, SchemaDiff{Object: "sequence " + id, Issue: "missing on target"})
		case dtyp != typ:
			diffs = append(diffs, SchemaDiff{Object: "sequence " + id, Issue: fmt.Sprintf("type %s on source, %s on target", typ, dtyp)})
		}
	}
	slices.SortFunc(diffs, func(a, b SchemaDiff) int { return strings.Compare(a.Object, b.Object) })
	return diffs, both, targets
}
