package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pgtandem/pgtandem/internal/logging"
)

// progressReporter draws a progress bar on a terminal and prints a line
// every few seconds otherwise, so logs of unattended runs show progress too.
func progressReporter(w io.Writer, what string) func(done, total int64) {
	if logging.IsTerminal(w) {
		bar := progressbar.NewOptions64(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
		return func(done, total int64) {
			bar.ChangeMax64(total)
			_ = bar.Set64(done)
		}
	}
	var mu sync.Mutex
	var last time.Time
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < 5*time.Second && done != total {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "%s: %d of %d chunks\n", what, done, total)
	}
}
