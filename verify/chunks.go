package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// compareByKey hashes the table in one scan per side, grouped into chunks
// of about ChunkRows rows by the first key column (width_bucket over chunk
// boundaries), so every row is read once, by a sequential scan; only
// differing chunks are read again, by key range, to name their rows.
func (c *comparer) compareByKey(ctx context.Context, src, dst *table, res *TableResult) error {
	var keyText []string
	for _, k := range src.Key {
		keyText = append(keyText, pgx.Identifier{k}.Sanitize()+"::text")
	}
	first, firstType := src.keyOrder(src.Key[0])
	bounds, err := c.boundaries(ctx, src, first)
	if err != nil {
		return err
	}
	chunks := len(bounds) + 1
	c.addChunks(chunks)
	hash := rowExpr(src, dst)
	// The bounds are spelled out as a constant so the cast is folded once,
	// not evaluated per row.
	quoted := make([]string, len(bounds))
	for i, b := range bounds {
		quoted[i] = quoteLiteral(b)
	}
	chunkOf := fmt.Sprintf("width_bucket(%s, ARRAY[%s]::text[]::%s[])", first, strings.Join(quoted, ", "), firstType)
	sides, err := c.groupSums(ctx, chunkOf, hash, src)
	if err != nil {
		return fmt.Errorf("hash chunks: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for chunk := 0; chunk < chunks; chunk++ {
		s, d := sides[0][int64(chunk)], sides[1][int64(chunk)]
		differs := s != d
		res.addChunk(s.count, d.count, differs)
		if !differs {
			c.chunkDone()
			continue
		}
		// width_bucket's chunk i holds bounds[i-1] <= key < bounds[i].
		var conds []string
		var args []any
		if chunk > 0 {
			args = append(args, bounds[chunk-1])
			conds = append(conds, fmt.Sprintf("%s >= $%d::text::%s", first, len(args), firstType))
		}
		if chunk < len(bounds) {
			args = append(args, bounds[chunk])
			conds = append(conds, fmt.Sprintf("%s < $%d::text::%s", first, len(args), firstType))
		}
		pred := "true"
		if len(conds) > 0 {
			pred = strings.Join(conds, " AND ")
		}
		g.Go(func() error {
			defer c.chunkDone()
			return c.narrowByKey(gctx, src, strings.Join(keyText, ", "), hash, pred, args, res)
		})
	}
	return g.Wait()
}

// chunkSum is a chunk's row count and sum of row hashes.
type chunkSum struct {
	count int64
	hash  string
}

// groupSums computes, on both sides, the chunkSum of every chunk that the
// expression group assigns rows to.
func (c *comparer) groupSums(ctx context.Context, group, hash string, t *table) ([2]map[int64]chunkSum, error) {
	var sides [2]map[int64]chunkSum
	err := c.both(ctx, fmt.Sprintf(`SELECT %s, count(*), sum(%s)::text FROM %s GROUP BY 1`, group, hash, t.qualified()), nil,
		func(side int, rows pgx.Rows) error {
			m := map[int64]chunkSum{}
			for rows.Next() {
				var chunk int64
				var s chunkSum
				if err := rows.Scan(&chunk, &s.count, &s.hash); err != nil {
					return err
				}
				m[chunk] = s
			}
			sides[side] = m
			return nil
		})
	return sides, err
}

// boundaries returns ascending values of the first key column that cut the
// table into chunks of about ChunkRows rows. The histogram the planner keeps
// gives them for free; without statistics they are read from the key order,
// one scan of the key index.
func (c *comparer) boundaries(ctx context.Context, t *table, first string) ([]string, error) {
	var estimate float64
	var hist []string
	err := c.src.QueryRow(ctx, `SELECT greatest(c.reltuples, 0), coalesce((SELECT s.histogram_bounds::text::text[] FROM pg_stats s
			WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = $3), '{}')
		FROM pg_class c WHERE c.oid = $4::regclass`, t.Schema, t.Name, t.Key[0], t.qualified()).Scan(&estimate, &hist)
	if err != nil {
		return nil, fmt.Errorf("read statistics: %w", err)
	}
	if estimate > 0 && estimate <= float64(c.cfg.ChunkRows) {
		return []string{}, nil
	}
	if len(hist) > 1 && estimate > 0 {
		step := max(1, int(float64(c.cfg.ChunkRows)/(estimate/float64(len(hist)-1))))
		bounds := []string{}
		for i := step; i < len(hist)-1; i += step {
			bounds = append(bounds, hist[i])
		}
		return bounds, nil
	}
	rows, err := c.src.Query(ctx, fmt.Sprintf(`SELECT b::text FROM (SELECT DISTINCT k AS b FROM (SELECT %s AS k, row_number() OVER (ORDER BY %s) AS rn FROM %s) s WHERE rn %% %d = 0) d ORDER BY b`,
		first, first, t.qualified(), c.cfg.ChunkRows))
	if err != nil {
		return nil, fmt.Errorf("read chunk boundaries: %w", err)
	}
	bounds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read chunk boundaries: %w", err)
	}
	return bounds, nil
}

// narrowByKey lists the rows of a differing chunk by key.
func (c *comparer) narrowByKey(ctx context.Context, t *table, keys, hash, pred string, args []any, res *TableResult) error {
	var sides [2]map[string]int64
	err := c.both(ctx, fmt.Sprintf(`SELECT concat_ws(', ', %s), %s FROM %s WHERE %s`, keys, hash, t.qualified(), pred), args,
		func(side int, rows pgx.Rows) error {
			m := map[string]int64{}
			for rows.Next() {
				var k string
				var h int64
				if err := rows.Scan(&k, &h); err != nil {
					return err
				}
				m[k] = h
			}
			sides[side] = m
			return nil
		})
	if err != nil {
		return fmt.Errorf("narrow a differing chunk: %w", err)
	}
	var diffs []RowDiff
	for k, h := range sides[0] {
		switch dh, ok := sides[1][k]; {
		case !ok:
			diffs = append(diffs, RowDiff{Key: k, Issue: "missing on target"})
		case dh != h:
			diffs = append(diffs, RowDiff{Key: k, Issue: "different"})
		}
	}
	for k := range sides[1] {
		if _, ok := sides[0][k]; !ok {
			diffs = append(diffs, RowDiff{Key: k, Issue: "only on target"})
		}
	}
	slices.SortFunc(diffs, compareRowDiffs)
	for _, d := range diffs {
		res.addDiff(d, c.cfg.MaxRowDiffs)
	}
	return nil
}

// compareByBuckets compares a table without usable key: rows are hashed
// into buckets in one scan per side; differing buckets are compared as
// multisets of rows, so duplicates count.
func (c *comparer) compareByBuckets(ctx context.Context, src, dst *table, res *TableResult) error {
	var estimate float64
	if err := c.src.QueryRow(ctx, `SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = $1::regclass`, src.qualified()).Scan(&estimate); err != nil {
		return fmt.Errorf("estimate rows: %w", err)
	}
	buckets := max(1, int64(estimate)/int64(c.cfg.ChunkRows))
	c.addChunks(int(buckets))
	hash := rowExpr(src, dst)
	bucket := fmt.Sprintf("((%s %% %d) + %d) %% %d", hash, buckets, buckets, buckets)
	sides, err := c.groupSums(ctx, bucket, hash, src)
	if err != nil {
		return fmt.Errorf("hash buckets: %w", err)
	}
	for b := int64(0); b < buckets; b++ {
		s, d := sides[0][b], sides[1][b]
		differs := s != d
		res.addChunk(s.count, d.count, differs)
		if differs {
			if err := c.narrowBucket(ctx, src, dst, bucket, b, res); err != nil {
				return err
			}
		}
		c.chunkDone()
	}
	return nil
}

func (c *comparer) narrowBucket(ctx context.Context, src, dst *table, bucket string, b int64, res *TableResult) error {
	var cols []string
	for _, col := range src.Columns {
		if _, ok := dst.columnType(col.Name); ok {
			cols = append(cols, pgx.Identifier{col.Name}.Sanitize())
		}
	}
	var sides [2]map[string]int
	err := c.both(ctx, fmt.Sprintf(`SELECT ROW(%s)::text FROM %s WHERE %s = $1`, strings.Join(cols, ", "), src.qualified(), bucket), []any{b},
		func(side int, rows pgx.Rows) error {
			m := map[string]int{}
			for rows.Next() {
				var r string
				if err := rows.Scan(&r); err != nil {
					return err
				}
				m[r]++
			}
			sides[side] = m
			return nil
		})
	if err != nil {
		return fmt.Errorf("narrow a differing bucket: %w", err)
	}
	var diffs []RowDiff
	for r, n := range sides[0] {
		if m := sides[1][r]; m < n {
			diffs = append(diffs, RowDiff{Key: truncate(r), Issue: fmt.Sprintf("%d on source, %d on target", n, m)})
		}
	}
	for r, m := range sides[1] {
		if n := sides[0][r]; n < m {
			diffs = append(diffs, RowDiff{Key: truncate(r), Issue: fmt.Sprintf("%d on source, %d on target", n, m)})
		}
	}
	slices.SortFunc(diffs, compareRowDiffs)
	for _, d := range diffs {
		res.addDiff(d, c.cfg.MaxRowDiffs)
	}
	return nil
}

func compareRowDiffs(a, b RowDiff) int { return strings.Compare(a.Key, b.Key) }

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings
// is on in every supported major).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
