package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// sourceTable is a table whose rows are copied: every table with storage
// (partitions individually, their roots hold none).
type sourceTable struct {
	qualified    string
	id           string // schema.name, for messages
	schema, name string
	size         int64 // on disk, an estimate of the bytes COPY moves
	estRows      int64
	// unitSchema and unitName name the unit the table is copied and handed
	// off with (see copyUnit).
	unitSchema, unitName string
	// columns lists the stored columns (generated ones are left to the
	// target to compute); where selects one key range of a table split for
	// a parallel copy, empty for the whole table; part counts the ranges
	// from 0 up to parts.
	columns     string
	where       string
	part, parts int
}

// copyUnit is what is copied in one snapshot and handed off at one LSN: a
// table, or all partitions of a partitioned table when the publication
// names their changes by the root (publish_via_partition_root), as a change
// of the root does not tell which partition its row is in.
type copyUnit struct {
	schema, name string // as events name it
	tables       []sourceTable
}

func (u copyUnit) String() string { return u.schema + "." + u.name }

func groupUnits(tables []sourceTable) []copyUnit {
	var units []copyUnit
	index := map[[2]string]int{}
	for _, t := range tables {
		key := [2]string{t.unitSchema, t.unitName}
		i, ok := index[key]
		if !ok {
			i = len(units)
			index[key] = i
			units = append(units, copyUnit{schema: t.unitSchema, name: t.unitName})
		}
		units[i].tables = append(units[i].tables, t)
	}
	return units
}

func unitNames(units []copyUnit) []string {
	names := make([]string, len(units))
	for i, u := range units {
		names[i] = u.String()
	}
	return names
}

// publishesViaRoot reports whether the publication names the changes of
// partitions by their root, as init creates it on PostgreSQL 13 or later.
func publishesViaRoot(ctx context.Context, conn *pgx.Conn, major int) (bool, error) {
	if major < 13 {
		return false, nil
	}
	var via bool
	err := conn.QueryRow(ctx, `SELECT pubviaroot FROM pg_publication WHERE pubname = $1`, catalog.PublicationName).Scan(&via)
	if errors.Is(err, pgx.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("init: read publication %s: %w", catalog.PublicationName, err)
	}
	return via, nil
}

func listTables(ctx context.Context, conn *pgx.Conn, viaRoot bool) ([]sourceTable, error) {
	root := "c.oid"
	if viaRoot {
		root = "coalesce(pg_partition_root(c.oid), c.oid)"
	}
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, pg_table_size(c.oid), greatest(c.reltuples, 0)::bigint, rn.nspname, r.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_class r ON r.oid = `+root+` JOIN pg_namespace rn ON rn.oid = r.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtandem') AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY c.relpages DESC`)
	if err != nil {
		return nil, fmt.Errorf("init: list source tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (sourceTable, error) {
		var t sourceTable
		err := r.Scan(&t.qualified, &t.schema, &t.name, &t.size, &t.estRows, &t.unitSchema, &t.unitName)
		t.id = t.schema + "." + t.name
		return t, err
	})
}

// NotEmptyError lists target tables that already hold rows.
type NotEmptyError struct {
	Tables []string
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("init: target tables already hold rows: %s; truncate them, or pass --allow-nonempty to copy next to those rows (such a copy cannot be resumed if it stops)", strings.Join(e.Tables, ", "))
}

func checkEmpty(ctx context.Context, conn *pgx.Conn, tables []sourceTable) error {
	var full []string
	for _, t := range tables {
		var has bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.qualified+`)`).Scan(&has); err != nil {
			return fmt.Errorf("init: check that %s is empty on the target: %w", t.id, err)
		}
		if has {
			full = append(full, t.id)
		}
	}
	if len(full) > 0 {
		return &NotEmptyError{Tables: full}
	}
	return nil
}

// splitTables fills in the columns of every table and cuts tables of more
// than splitRows rows into ranges of their first key column, taken from the
// planner's histogram, so that one large table is copied by several
// sessions at once; a key of a domain type is ranged over as its base type.
// A table without key or statistics stays whole.
func splitTables(ctx context.Context, conn *pgx.Conn, tables []sourceTable, splitRows int, major int) ([]sourceTable, error) {
	generated := "false"
	if major >= 12 {
		generated = "a.attgenerated <> ''"
	}
	var out []sourceTable
	for _, t := range tables {
		var cols []string
		var estimate float64
		var keyCol, keyType *string
		var hist []string
		err := conn.QueryRow(ctx, `
			SELECT array(SELECT quote_ident(a.attname) FROM pg_attribute a
			             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND NOT (`+generated+`)
			             ORDER BY a.attnum),
			       greatest(c.reltuples, 0),
			       (SELECT quote_ident(a.attname) || coalesce('::' || `+catalog.DomainBaseSQL("a.atttypid")+`, '')
			         FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			         WHERE i.indrelid = c.oid AND i.indisprimary),
			       (SELECT coalesce(`+catalog.DomainBaseSQL("a.atttypid")+`, format_type(a.atttypid, a.atttypmod))
			         FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			         WHERE i.indrelid = c.oid AND i.indisprimary),
			       coalesce((SELECT s.histogram_bounds::text::text[] FROM pg_stats s, pg_index i, pg_attribute a
			         WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid AND a.attnum = i.indkey[0]
			           AND s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname), '{}')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::regclass`, t.qualified).
			Scan(&cols, &estimate, &keyCol, &keyType, &hist)
		if err != nil {
			return nil, fmt.Errorf("init: describe %s: %w", t.id, err)
		}
		t.columns = strings.Join(cols, ", ")
		t.part, t.parts = 0, 1
		if splitRows <= 0 || estimate <= float64(splitRows) || keyCol == nil || len(hist) < 3 {
			out = append(out, t)
			continue
		}
		step := max(1, int(float64(splitRows)/(estimate/float64(len(hist)-1))))
		var bounds []string
		for i := step; i < len(hist)-1; i += step {
			bounds = append(bounds, quoteLiteral(hist[i])+"::"+*keyType)
		}
		for i := 0; i <= len(bounds); i++ {
			part := t
			var conds []string
			if i > 0 {
				conds = append(conds, *keyCol+" >= "+bounds[i-1])
			}
			if i < len(bounds) {
				conds = append(conds, *keyCol+" < "+bounds[i])
			}
			part.where = strings.Join(conds, " AND ")
			part.size = t.size / int64(len(bounds)+1)
			part.part, part.parts = i, len(bounds)+1
			out = append(out, part)
		}
	}
	return out, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
