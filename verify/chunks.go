package verify

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgtandem/pgtandem/internal/event"
)

// keyRange is a chunk of a keyed table: keys after lo (nil: from the start)
// up to and including hi (nil: to the end).
type keyRange struct {
	lo, hi []string
}

// keyCols returns the quoted key columns as a row, and a row of n text
// parameters cast to the key types starting at $first.
func keyRow(t *table, first int) (cols, params string) {
	var c, p []string
	for i, k := range t.Key {
		typ, _ := t.columnType(k)
		c = append(c, event.QuoteIdent(k))
		p = append(p, fmt.Sprintf("$%d::text::%s", first+i, typ))
	}
	return "ROW(" + strings.Join(c, ", ") + ")", "ROW(" + strings.Join(p, ", ") + ")"
}

// where returns the predicate and arguments selecting a chunk.
func (r keyRange) where(t *table) (string, []any) {
	var conds []string
	var args []any
	if r.lo != nil {
		cols, params := keyRow(t, len(args)+1)
		conds = append(conds, cols+" > "+params)
		for _, v := range r.lo {
			args = append(args, v)
		}
	}
	if r.hi != nil {
		cols, params := keyRow(t, len(args)+1)
		conds = append(conds, cols+" <= "+params)
		for _, v := range r.hi {
			args = append(args, v)
		}
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " AND "), args
}

// compareByKey cuts the table into key ranges of about ChunkRows rows, read
// from the source's key order, and compares each range's count and hash sum.
func (c *comparer) compareByKey(ctx context.Context, src, dst *table, res *TableResult) error {
	var keyText []string
	for _, k := range src.Key {
		keyText = append(keyText, event.QuoteIdent(k)+"::text")
	}
	keys := strings.Join(keyText, ", ")
	cols, _ := keyRow(src, 1)
	order := strings.TrimSuffix(strings.TrimPrefix(cols, "ROW("), ")")
	rows, err := c.src.Query(ctx, fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS rn FROM %s) s WHERE rn %% %d = 0 ORDER BY rn`,
		strings.Join(quotedAll(len(src.Key)), ", "), aliasAll(keyText), order, src.qualified(), c.cfg.ChunkRows))
	if err != nil {
		return fmt.Errorf("read chunk boundaries: %w", err)
	}
	var bounds [][]string
	for rows.Next() {
		vals := make([]string, len(src.Key))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return err
		}
		bounds = append(bounds, vals)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read chunk boundaries: %w", err)
	}
	ranges := make([]keyRange, 0, len(bounds)+1)
	var lo []string
	for _, b := range bounds {
		ranges = append(ranges, keyRange{lo: lo, hi: b})
		lo = b
	}
	ranges = append(ranges, keyRange{lo: lo})
	c.addChunks(len(ranges))

	hash := rowExpr(src, dst)
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range ranges {
		g.Go(func() error {
			pred, args := r.where(src)
			var counts [2]int64
			var sums [2]string
			err := c.both(gctx, fmt.Sprintf(`SELECT count(*), coalesce(sum(%s), 0)::text FROM %s WHERE %s`, hash, src.qualified(), pred), args,
				func(side int, rows pgx.Rows) error {
					for rows.Next() {
						if err := rows.Scan(&counts[side], &sums[side]); err != nil {
							return err
						}
					}
					return nil
				})
			if err != nil {
				return err
			}
			differs := counts[0] != counts[1] || sums[0] != sums[1]
			res.addChunk(counts[0], counts[1], differs)
			if differs {
				if err := c.narrowByKey(gctx, src, keys, hash, pred, args, res); err != nil {
					return err
				}
			}
			c.chunkDone()
			return nil
		})
	}
	return g.Wait()
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
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].Key < diffs[j].Key })
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
	type sum struct {
		count int64
		hash  string
	}
	var sides [2]map[int64]sum
	err := c.both(ctx, fmt.Sprintf(`SELECT %s AS b, count(*), sum(%s)::text FROM %s GROUP BY 1`, bucket, hash, src.qualified()), nil,
		func(side int, rows pgx.Rows) error {
			m := map[int64]sum{}
			for rows.Next() {
				var b int64
				var s sum
				if err := rows.Scan(&b, &s.count, &s.hash); err != nil {
					return err
				}
				m[b] = s
			}
			sides[side] = m
			return nil
		})
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
			cols = append(cols, event.QuoteIdent(col.Name))
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
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].Key < diffs[j].Key })
	for _, d := range diffs {
		res.addDiff(d, c.cfg.MaxRowDiffs)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func quotedAll(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("k%d", i)
	}
	return out
}

func aliasAll(exprs []string) string {
	out := make([]string, len(exprs))
	for i, e := range exprs {
		out[i] = fmt.Sprintf("%s AS k%d", e, i)
	}
	return strings.Join(out, ", ")
}
