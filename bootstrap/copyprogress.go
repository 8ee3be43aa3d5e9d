package bootstrap

import (
	"sync/atomic"
	"time"
)

// CopyProgress is how far the copy of one init run is. Config.Progress gets
// one about five times a second while tables are copied, and a last one when
// the copy ends. Tables an earlier, interrupted run finished are not in it.
type CopyProgress struct {
	// Bytes is what COPY moved so far; TotalBytes the estimate for all
	// tables: what COPY moved for those done, the size on disk for the
	// others.
	Bytes, TotalBytes int64
	// Tables lists every table this run copies, largest first; a table
	// copied in key ranges appears once.
	Tables []TableProgress
}

// TableProgress is the copy of one table.
type TableProgress struct {
	Table string
	Rows  int64
	// EstimatedRows is the planner's estimate (reltuples), 0 when the table
	// was never analysed.
	EstimatedRows int64
	Bytes         int64
	// EstimatedBytes is the table's size on disk.
	EstimatedBytes int64
	// Started is zero while the table waits for a free job.
	Started time.Time
	// Done is set once every key range of the table is committed on the
	// target; Took is then how long the copy took.
	Done bool
	Took time.Duration
}

// copyTracker counts rows and bytes per table while the copy's goroutines
// run, for CopyProgress.
type copyTracker struct {
	tables []*tableTracker
}

type tableTracker struct {
	name              string
	estRows, estBytes int64
	rows, bytes       atomic.Int64
	partsLeft         atomic.Int32
	started, finished atomic.Int64 // unix nanoseconds, 0 when not yet
}

// newCopyTracker tracks tables (whole, before any split) whose parts are
// copied later.
func newCopyTracker(tables []sourceTable, parts []sourceTable) (*copyTracker, map[string]*tableTracker) {
	c := &copyTracker{}
	byID := map[string]*tableTracker{}
	for _, t := range tables {
		tt := &tableTracker{name: t.id, estRows: t.estRows, estBytes: t.size}
		c.tables = append(c.tables, tt)
		byID[t.id] = tt
	}
	for _, p := range parts {
		byID[p.id].partsLeft.Add(1)
	}
	return c, byID
}

func (t *tableTracker) start() {
	t.started.CompareAndSwap(0, time.Now().UnixNano())
}

// partDone records a committed part; the last one finishes the table.
func (t *tableTracker) partDone() {
	if t.partsLeft.Add(-1) == 0 {
		t.finished.Store(time.Now().UnixNano())
	}
}

func (c *copyTracker) snapshot() CopyProgress {
	var p CopyProgress
	for _, t := range c.tables {
		tp := TableProgress{Table: t.name, Rows: t.rows.Load(), EstimatedRows: t.estRows, Bytes: t.bytes.Load(), EstimatedBytes: t.estBytes}
		if s := t.started.Load(); s != 0 {
			tp.Started = time.Unix(0, s)
		}
		if f := t.finished.Load(); f != 0 {
			tp.Done, tp.Took = true, time.Duration(f-t.started.Load())
		}
		p.Tables = append(p.Tables, tp)
		p.Bytes += tp.Bytes
		if tp.Done {
			p.TotalBytes += tp.Bytes
		} else {
			p.TotalBytes += max(tp.EstimatedBytes, tp.Bytes)
		}
	}
	return p
}

// report calls progress with a snapshot every 200 ms until the returned
// stop, which sends a last one.
func (c *copyTracker) report(progress func(CopyProgress)) (stop func()) {
	if progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				progress(c.snapshot())
				return
			case <-tick.C:
				progress(c.snapshot())
			}
		}
	}()
	return func() { close(quit); <-done }
}
