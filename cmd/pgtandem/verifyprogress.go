package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/pgtandem/pgtandem/internal/logging"
)

// progressReporter draws a progress bar of chunks on a terminal and prints
// a line every few seconds otherwise, so logs of unattended runs show
// progress too. stop removes the bar; call it once the work is over.
func progressReporter(w io.Writer, what string) (report func(done, total int64), stop func()) {
	if logging.CanRedraw(w) {
		p := mpb.New(mpb.WithOutput(w), mpb.WithRefreshRate(200*time.Millisecond))
		bar := p.New(0, mpb.BarStyle(), mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name(what, decor.WCSyncSpaceR), decor.CountersNoUnit("%d of %d chunks", decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace)))
		var mu sync.Mutex
		report = func(done, total int64) {
			mu.Lock()
			defer mu.Unlock()
			bar.SetTotal(total, false)
			bar.SetCurrent(done)
		}
		return report, func() {
			bar.Abort(true)
			p.Wait()
		}
	}
	var mu sync.Mutex
	var last time.Time
	report = func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < 5*time.Second && done != total {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "%s: %d of %d chunks\n", what, done, total)
	}
	return report, func() {}
}
