package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/logging"
)

// copyDisplay shows init's copy: on a terminal a bar per table being copied
// under one for the whole copy, redrawn in place; otherwise a few lines every
// 5 seconds, so that the logs of unattended runs show progress too.
type copyDisplay struct {
	update func(bootstrap.CopyProgress)
	// logs is where log lines go while the display runs: through the bars'
	// container on a terminal, so that they print above the bars instead
	// of through them.
	logs io.Writer
	stop func()
}

func newCopyDisplay(w io.Writer, what string) copyDisplay {
	if logging.CanRedraw(w) {
		b := newCopyBars(w, what, time.Now)
		return copyDisplay{update: b.update, logs: &aboveBars{p: b.p, after: w}, stop: b.stop}
	}
	l := &copyLines{w: w, what: what, every: 5 * time.Second, now: time.Now}
	return copyDisplay{update: l.update, logs: w, stop: func() {}}
}

// copyLines prints the overall state and one line per table being copied.
type copyLines struct {
	w     io.Writer
	what  string
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last time.Time
}

func (l *copyLines) update(p bootstrap.CopyProgress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.last) < l.every {
		return
	}
	l.last = now
	fmt.Fprintf(l.w, "%s: %s\n", l.what, overallStatus(p, now))
	for _, t := range p.Tables {
		if copying(t) {
			fmt.Fprintf(l.w, "%s:   %s: %s\n", l.what, t.Table, tableStatus(t, now))
		}
	}
}

// copyBars keeps one bar per table being copied; a table's bar goes away
// once the table is done (its "copied" log line stays).
type copyBars struct {
	p    *mpb.Progress
	what string
	now  func() time.Time

	// mu guards what the decorators read on mpb's goroutines; it is never
	// held while calling mpb, which waits for those goroutines.
	mu   sync.Mutex
	last bootstrap.CopyProgress

	// barsMu orders update and stop.
	barsMu sync.Mutex
	total  *mpb.Bar
	bars   map[string]*mpb.Bar
}

// barScale is a bar's total: the bars show fractions of estimates.
const barScale = 1000

func newCopyBars(w io.Writer, what string, now func() time.Time, opts ...mpb.ContainerOption) *copyBars {
	opts = append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithRefreshRate(200 * time.Millisecond)}, opts...)
	return &copyBars{p: mpb.New(opts...), what: what, now: now, bars: map[string]*mpb.Bar{}}
}

func (b *copyBars) update(p bootstrap.CopyProgress) {
	b.mu.Lock()
	// The decorators read it on mpb's goroutines after the caller has
	// moved on: keep a copy of its own.
	b.last = p
	b.last.Tables = slices.Clone(p.Tables)
	b.mu.Unlock()
	b.barsMu.Lock()
	defer b.barsMu.Unlock()
	if b.total == nil {
		b.total = b.p.New(barScale, mpb.BarStyle(),
			mpb.PrependDecorators(decor.Name(b.what, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return b.overallText() })))
	}
	for _, t := range p.Tables {
		bar, shown := b.bars[t.Table]
		switch {
		case shown && t.Done:
			bar.SetCurrent(barScale)
			delete(b.bars, t.Table)
		case shown:
			bar.SetCurrent(int64(fraction(t) * barScale))
		case copying(t):
			name := t.Table
			bar = b.p.New(barScale, mpb.BarStyle(), mpb.BarRemoveOnComplete(),
				mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
				mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return b.tableText(name) })))
			bar.SetCurrent(int64(fraction(t) * barScale))
			b.bars[name] = bar
		}
	}
	b.total.SetCurrent(min(int64(overallFraction(p)*barScale), barScale-1))
}

func (b *copyBars) overallText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return overallStatus(b.last, b.now())
}

func (b *copyBars) tableText(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.last.Tables {
		if t.Table == name {
			return tableStatus(t, b.now())
		}
	}
	return ""
}

// stop ends the display: bars of tables still copying (the copy failed)
// are dropped, the overall bar stays as it was.
func (b *copyBars) stop() {
	b.barsMu.Lock()
	for name, bar := range b.bars {
		bar.Abort(true)
		delete(b.bars, name)
	}
	b.mu.Lock()
	last := b.last
	b.mu.Unlock()
	if b.total != nil {
		if overallFraction(last) >= 1 {
			b.total.SetCurrent(barScale)
		} else {
			b.total.Abort(false)
		}
	}
	b.barsMu.Unlock()
	b.p.Wait()
}

// aboveBars writes log lines above the bars while they run, and straight
// through once they are gone.
type aboveBars struct {
	p     *mpb.Progress
	after io.Writer
}

func (a *aboveBars) Write(p []byte) (int, error) {
	n, err := a.p.Write(p)
	if errors.Is(err, mpb.ErrDone) {
		return a.after.Write(p)
	}
	return n, err
}

// copying reports whether a table is being copied right now.
func copying(t bootstrap.TableProgress) bool { return !t.Started.IsZero() && !t.Done }

// fraction estimates how much of a table is copied: rows against the
// planner's estimate, or bytes against the size on disk when there is none.
// It stays below 1 until the table is done, as estimates are only estimates.
func fraction(t bootstrap.TableProgress) float64 {
	if t.Done {
		return 1
	}
	var f float64
	switch {
	case t.EstimatedRows > 0:
		f = float64(t.Rows) / float64(t.EstimatedRows)
	case t.EstimatedBytes > 0:
		f = float64(t.Bytes) / float64(t.EstimatedBytes)
	}
	return min(f, 0.99)
}

func overallFraction(p bootstrap.CopyProgress) float64 {
	done := 0
	for _, t := range p.Tables {
		if t.Done {
			done++
		}
	}
	if len(p.Tables) > 0 && done == len(p.Tables) {
		return 1
	}
	if p.TotalBytes == 0 {
		return 0
	}
	return min(float64(p.Bytes)/float64(p.TotalBytes), 0.99)
}

// tableStatus is what a table's bar or line says: rows of the estimate,
// rate, and the time left at that rate.
func tableStatus(t bootstrap.TableProgress, now time.Time) string {
	elapsed := now.Sub(t.Started)
	rows := thousands(t.Rows) + " rows"
	if t.EstimatedRows > 0 {
		rows = thousands(t.Rows) + " of ~" + thousands(max(t.EstimatedRows, t.Rows)) + " rows"
	}
	return fmt.Sprintf("%s, %.1f MB/s, ETA %s", rows, float64(t.Bytes)/1e6/max(elapsed.Seconds(), 0.001), eta(fraction(t), elapsed))
}

// overallStatus is the state of the whole copy, which began when its first
// table did.
func overallStatus(p bootstrap.CopyProgress, now time.Time) string {
	done := 0
	began := now
	for _, t := range p.Tables {
		if t.Done {
			done++
		}
		if !t.Started.IsZero() && t.Started.Before(began) {
			began = t.Started
		}
	}
	elapsed := now.Sub(began)
	return fmt.Sprintf("%.1f of ~%.1f MB, %.1f MB/s, ETA %s, %d of %d tables done", float64(p.Bytes)/1e6, float64(p.TotalBytes)/1e6,
		float64(p.Bytes)/1e6/max(elapsed.Seconds(), 0.001), eta(overallFraction(p), elapsed), done, len(p.Tables))
}

// eta extrapolates the time left from the fraction done after elapsed.
func eta(done float64, elapsed time.Duration) string {
	if done <= 0 {
		return "?"
	}
	return time.Duration(float64(elapsed) * (1 - done) / done).Round(time.Second).String()
}

// thousands prints n with thousands separators: 1234567 as 1,234,567.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
