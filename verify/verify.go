// Package verify proves that two clusters hold the same schema and data,
// without moving the data: each server hashes its own rows, only counts and
// hashes cross the network, and only chunks whose hashes differ are looked at
// row by row.
//
// # How data is compared
//
// A table with a primary key is cut into key-ordered chunks of about
// Config.ChunkRows rows (boundaries read from the source's key index); each
// chunk's row count and sum of 64-bit row hashes (hashtextextended of the
// row's text form, the same on every major) are computed on both servers in
// parallel. A differing chunk is narrowed to the keys of the rows that are
// missing, extra or different. A table without key is hashed into buckets in
// one scan per side, and differing buckets are compared as multisets of rows.
//
// The comparison sees each database as it is at that moment: run it on a
// quiet or fenced source with the target caught up (the switch does, right
// after its marker handshake).
package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	pgtcatalog "github.com/pgtandem/pgtandem/internal/catalog"
)

// Config says what to compare.
type Config struct {
	SourceDSN, TargetDSN string
	// Jobs is how many chunks are hashed at once on each server.
	Jobs int
	// Tables limits the comparison to these schema.table names; empty
	// compares every table.
	Tables []string
	// ChunkRows is the rows per chunk.
	ChunkRows int
	// MaxRowDiffs is how many differing rows are listed per table (all are
	// counted).
	MaxRowDiffs int
}

// DefaultConfig returns the tuning defaults.
func DefaultConfig() Config {
	return Config{Jobs: 4, ChunkRows: 50000, MaxRowDiffs: 20}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.SourceDSN == "" || c.TargetDSN == "" {
		errs = append(errs, errors.New("verify: source and target DSN are required"))
	}
	if c.Jobs < 1 || c.ChunkRows < 1 || c.MaxRowDiffs < 0 {
		errs = append(errs, fmt.Errorf("verify: jobs (%d) and chunk rows (%d) must be positive", c.Jobs, c.ChunkRows))
	}
	return errors.Join(errs...)
}

// Report is the outcome of a comparison.
type Report struct {
	Schema []SchemaDiff   `json:"schema_differences"`
	Tables []*TableResult `json:"tables"`
}

// Equal reports whether nothing differs.
func (r *Report) Equal() bool {
	if len(r.Schema) > 0 {
		return false
	}
	for _, t := range r.Tables {
		if t.Status != StatusEqual {
			return false
		}
	}
	return true
}

// Table statuses.
const (
	StatusEqual     = "equal"
	StatusDifferent = "different"
)

// TableResult is the data comparison of one table.
type TableResult struct {
	Table      string `json:"table"`
	SourceRows int64  `json:"source_rows"`
	TargetRows int64  `json:"target_rows"`
	Chunks     int    `json:"chunks"`
	DiffChunks int    `json:"differing_chunks"`
	DiffRows   int    `json:"differing_rows"`
	// Rows lists up to Config.MaxRowDiffs differing rows.
	Rows   []RowDiff `json:"rows,omitempty"`
	Status string    `json:"status"`

	mu sync.Mutex
}

// RowDiff is one row that differs: Key is the primary key's values (or,
// without key, the row itself).
type RowDiff struct {
	Key   string `json:"key"`
	Issue string `json:"issue"`
}

// Progress is told how many chunks are done out of how many are known; calls
// never overlap.
type Progress func(done, total int64)

// Run compares source and target.
func Run(ctx context.Context, cfg Config, progress Progress) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src, err := openPool(ctx, cfg.SourceDSN, cfg.Jobs, "source")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := openPool(ctx, cfg.TargetDSN, cfg.Jobs, "target")
	if err != nil {
		return nil, err
	}
	defer dst.Close()

	var srcCat, dstCat *catalog
	var cats errgroup.Group
	cats.Go(func() (err error) {
		if srcCat, err = readCatalog(ctx, src); err != nil {
			err = fmt.Errorf("source: %w", err)
		}
		return err
	})
	cats.Go(func() (err error) {
		if dstCat, err = readCatalog(ctx, dst); err != nil {
			err = fmt.Errorf("target: %w", err)
		}
		return err
	})
	if err := cats.Wait(); err != nil {
		return nil, err
	}
	only := map[string]bool{}
	for _, t := range cfg.Tables {
		if !strings.Contains(t, ".") {
			t = "public." + t
		}
		if srcCat.tables[t] == nil {
			return nil, fmt.Errorf("verify: table %s does not exist on the source", t)
		}
		only[t] = true
	}
	report := &Report{}
	var tables, targets []*table
	report.Schema, tables, targets = compareSchemas(srcCat, dstCat, only)

	c := &comparer{cfg: cfg, src: src, dst: dst, slots: make(chan struct{}, cfg.Jobs), progress: progress}
	g, gctx := errgroup.WithContext(ctx)
	for i, t := range tables {
		res := &TableResult{Table: t.id()}
		report.Tables = append(report.Tables, res)
		g.Go(func() error { return c.compareTable(gctx, t, targets[i], res) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return report, nil
}

func openPool(ctx context.Context, dsn string, jobs int, side string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("verify: %s DSN: %w", side, err)
	}
	cfg.MaxConns = int32(jobs + 1)
	// The planner cannot know that chunk numbers are few, and would sort a
	// whole table (spilling to disk) to group it; a hash aggregate needs
	// one pass.
	cfg.ConnConfig.RuntimeParams["enable_sort"] = "off"
	cfg.ConnConfig.RuntimeParams["application_name"] = "pgtandem verify"
	// Rows are hashed by their text forms: read in the same settings on
	// both sides, whatever each server's defaults, and in those capture and
	// apply carried them in.
	pgtcatalog.PinTextSettings(&cfg.ConnConfig.Config)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("verify: connect to %s: %w", side, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("verify: connect to %s: %w", side, err)
	}
	return pool, nil
}

// comparer runs chunk comparisons, at most cfg.Jobs at once per server.
type comparer struct {
	cfg      Config
	src, dst *pgxpool.Pool
	slots    chan struct{}
	progress Progress
	done     atomic.Int64
	total    atomic.Int64
	// reportMu serialises progress calls, which come from every chunk's
	// goroutine, so a Progress func needs no locking of its own.
	reportMu sync.Mutex
}

// both runs the same query on source and target at once, each scanning
// into its own destinations.
func (c *comparer) both(ctx context.Context, query string, args []any, scan func(side int, rows pgx.Rows) error) error {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.slots }()
	g, gctx := errgroup.WithContext(ctx)
	for side, pool := range []*pgxpool.Pool{c.src, c.dst} {
		g.Go(func() error {
			rows, err := pool.Query(gctx, query, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			if err := scan(side, rows); err != nil {
				return err
			}
			return rows.Err()
		})
	}
	return g.Wait()
}

func (c *comparer) addChunks(n int) {
	c.total.Add(int64(n))
	c.report()
}

func (c *comparer) chunkDone() {
	c.done.Add(1)
	c.report()
}

func (c *comparer) report() {
	if c.progress == nil {
		return
	}
	c.reportMu.Lock()
	defer c.reportMu.Unlock()
	c.progress(c.done.Load(), c.total.Load())
}

// rowExpr is a row's hash, over the source's columns that the target has
// too (extra target columns do not count). Each column is hashed on its own
// with a seed of its position, and the hashes are combined with XOR, so the
// same values in other columns give another hash. Columns of the same type
// on both sides whose values are equal exactly when their text is equal are
// hashed by the type's own hash function, the one hash partitioning relies
// on and so stable across majors; turning every value into text cost more
// than half of a verify. Other columns are hashed by their text form, read
// in the session settings of openPool.
func rowExpr(src, dst *table) string {
	var parts []string
	for _, col := range src.Columns {
		dstType, ok := dst.columnType(col.Name)
		if !ok {
			continue
		}
		seed := strconv.Itoa(len(parts) + 1)
		typ := col.Type
		if dstType != typ {
			typ = ""
		}
		// NULL gets a value of its own per column.
		parts = append(parts, "coalesce("+columnHash(pgx.Identifier{col.Name}.Sanitize(), typ, seed)+", -"+seed+")")
	}
	if len(parts) == 0 {
		return "0::bigint"
	}
	return "(" + strings.Join(parts, " # ") + ")"
}

// columnHash hashes one column of type formatted ("" when the sides
// differ). Types whose equality is the identity of their text form use the
// type's hash function; strings are hashed as they are under the "C"
// collation (no cast: turning char(n) into text alone costs more than the
// rest of the row); the others (numeric, where 1.0 equals 1.00, floating
// point, intervals, times with zones, types without hash) by their text.
func columnHash(name, formatted, seed string) string {
	base, _, _ := strings.Cut(formatted, "(")
	if strings.HasSuffix(formatted, "]") {
		base = "" // arrays
	}
	switch base {
	case "integer":
		return "hashint4extended(" + name + ", " + seed + ")"
	case "smallint":
		return "hashint2extended(" + name + ", " + seed + ")"
	case "bigint":
		return "hashint8extended(" + name + ", " + seed + ")"
	case "oid":
		return "hashoidextended(" + name + ", " + seed + ")"
	case "uuid":
		return "uuid_hash_extended(" + name + ", " + seed + ")"
	case "text", "character varying":
		return "hashtextextended(" + name + ` COLLATE "C", ` + seed + ")"
	case "character":
		return "hashbpcharextended(" + name + ` COLLATE "C", ` + seed + ")"
	}
	return "hashtextextended(" + name + `::text COLLATE "C", ` + seed + ")"
}

func (c *comparer) compareTable(ctx context.Context, src, dst *table, res *TableResult) error {
	var err error
	if len(src.Key) > 0 && slices.Equal(src.Key, dst.Key) {
		err = c.compareByKey(ctx, src, dst, res)
	} else {
		err = c.compareByBuckets(ctx, src, dst, res)
	}
	if err != nil {
		return fmt.Errorf("verify table %s: %w", src.id(), err)
	}
	// Chunks finish in any order; list their rows in key order.
	slices.SortFunc(res.Rows, compareRowDiffs)
	res.Status = StatusEqual
	if res.DiffChunks > 0 || res.SourceRows != res.TargetRows {
		res.Status = StatusDifferent
	}
	return nil
}

func (res *TableResult) addDiff(d RowDiff, max int) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.DiffRows++
	if len(res.Rows) < max {
		res.Rows = append(res.Rows, d)
	}
}

func (res *TableResult) addChunk(srcRows, dstRows int64, differs bool) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.Chunks++
	res.SourceRows += srcRows
	res.TargetRows += dstRows
	if differs {
		res.DiffChunks++
	}
}
