package bootstrap

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pgtandem/pgtandem/internal/catalog"
	"golang.org/x/sync/errgroup"
)

// copyUnits copies the tables of units in snap, largest first so the
// longest copy starts earliest.
func (r *run) copyUnits(ctx context.Context, snap *snapshot, units []copyUnit) ([]TableCopy, error) {
	var tables []sourceTable
	for _, u := range units {
		tables = append(tables, u.tables...)
	}
	slices.SortStableFunc(tables, func(a, b sourceTable) int { return cmp.Compare(b.size, a.size) })
	parts, err := splitTables(ctx, r.src, tables, r.cfg.SplitRows, r.info.Major)
	if err != nil {
		return nil, err
	}
	tracker, byTable := newCopyTracker(tables, parts)
	stop := tracker.report(r.cfg.Progress)
	copies, err := copyParts(ctx, r.cfg, snap, parts, byTable, r.log)
	stop()
	if err != nil {
		return nil, err
	}
	for _, u := range units {
		r.snapshots[[2]string{u.schema, u.name}] = snap.lsn
	}
	return copies, nil
}

// copyParts streams the parts from the snapshot into the target, Jobs at
// once.
func copyParts(ctx context.Context, cfg Config, snap *snapshot, parts []sourceTable, tables map[string]*tableTracker, log *slog.Logger) ([]TableCopy, error) {
	results := make([]TableCopy, len(parts))
	var copied atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Jobs)
	for i, p := range parts {
		g.Go(func() error {
			tt := tables[p.id]
			tt.start()
			r, err := copyPart(gctx, cfg, snap, p, tt)
			if err != nil {
				return err
			}
			tt.partDone()
			results[i] = r
			log.Info("copied", "table", p.id, "rows", r.Rows, "MB", fmt.Sprintf("%.1f", float64(r.Bytes)/1e6),
				"MB/s", fmt.Sprintf("%.1f", float64(r.Bytes)/1e6/max(r.Took.Seconds(), 0.001)), "done", fmt.Sprintf("%d/%d", copied.Add(1), len(parts)))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// A split table was copied in parts; report it once.
	var merged []TableCopy
	index := map[string]int{}
	for _, r := range results {
		i, ok := index[r.Table]
		if !ok {
			index[r.Table] = len(merged)
			merged = append(merged, r)
			continue
		}
		merged[i].Rows += r.Rows
		merged[i].Bytes += r.Bytes
		merged[i].Took = max(merged[i].Took, r.Took)
		merged[i].Parts++
	}
	return merged, nil
}

// copyPart copies one table, or one key range of it, in one target
// transaction that also records it in pgtandem.init_tables: a resumed init
// keeps exactly what was committed.
func copyPart(ctx context.Context, cfg Config, snap *snapshot, t sourceTable, table *tableTracker) (TableCopy, error) {
	started := time.Now()
	res := TableCopy{Table: t.id, Parts: 1}
	srcConn, err := catalog.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: connect to source: %w", t.id, err)
	}
	defer srcConn.Close(context.Background())
	src := srcConn.PgConn()
	dst, err := catalog.Connect(ctx, cfg.TargetDSN)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: connect to target: %w", t.id, err)
	}
	defer dst.Close(context.Background())
	if err := src.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '`+snap.name+`'`).Close(); err != nil {
		return res, fmt.Errorf("init: copy %s: enter the slot's snapshot %s: %w", t.id, snap.name, err)
	}
	// Rows are loaded as the source holds them: no triggers or foreign key
	// checks fire (constraints come with post-data anyway).
	if _, err := dst.Exec(ctx, `SET session_replication_role = replica; SET synchronous_commit = off`); err != nil {
		return res, err
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("init: copy %s: begin on the target: %w", t.id, err)
	}
	defer tx.Rollback(context.Background())
	pr, pw := io.Pipe()
	// The source hands over one row per write; batching them keeps the pipe
	// from switching goroutines per row and the target from getting one
	// CopyData message per row.
	buffered := bufio.NewWriterSize(pw, 256<<10)
	counter := &countingWriter{w: buffered, table: table}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		out := `COPY ` + t.qualified + ` (` + t.columns + `) TO STDOUT`
		if t.where != "" {
			out = `COPY (SELECT ` + t.columns + ` FROM ` + t.qualified + ` WHERE ` + t.where + `) TO STDOUT`
		}
		_, err := src.CopyTo(gctx, counter, out)
		if err == nil {
			err = buffered.Flush()
		}
		pw.CloseWithError(err)
		if err != nil {
			return fmt.Errorf("init: copy %s out of the source: %w", t.id, err)
		}
		return nil
	})
	g.Go(func() error {
		tag, err := tx.Conn().PgConn().CopyFrom(gctx, pr, `COPY `+t.qualified+` (`+t.columns+`) FROM STDIN`)
		if err != nil {
			pr.CloseWithError(err)
			return fmt.Errorf("init: copy %s into the target: %w", t.id, err)
		}
		res.Rows = tag.RowsAffected()
		return nil
	})
	if err := g.Wait(); err != nil {
		return res, err
	}
	if err := src.Exec(ctx, `COMMIT`).Close(); err != nil {
		return res, err
	}
	res.Bytes = counter.n
	res.Took = time.Since(started)
	_, err = tx.Exec(ctx, recordPartSQL, cfg.Source, t.schema, t.name, t.part, t.parts, snap.lsn, res.Rows, res.Bytes, res.Took.Seconds())
	if err != nil {
		return res, fmt.Errorf("init: copy %s: record it in pgtandem.init_tables: %w", t.id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("init: copy %s: commit on the target: %w", t.id, err)
	}
	return res, nil
}

// countingWriter counts the bytes and rows that pass, for the part and for
// its table's progress. COPY's text format ends every row with a newline and
// escapes those inside values, so newlines count rows.
type countingWriter struct {
	w     io.Writer
	n     int64
	table *tableTracker
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.table.bytes.Add(int64(n))
	c.table.rows.Add(int64(bytes.Count(p[:n], []byte{'\n'})))
	return n, err
}
