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

// byteProgress shows bytes moved: a bar with rate and ETA on a terminal,
// a line every few seconds otherwise.
func byteProgress(w io.Writer, what string) func(done, total int64) {
	if logging.IsTerminal(w) {
		bar := progressbar.NewOptions64(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
			progressbar.OptionShowBytes(true), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond))
		return func(done, total int64) {
			bar.ChangeMax64(total)
			_ = bar.Set64(done)
		}
	}
	var mu sync.Mutex
	var last time.Time
	started := time.Now()
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < 5*time.Second {
			return
		}
		last = time.Now()
		rate := float64(done) / max(time.Since(started).Seconds(), 0.001)
		eta := time.Duration(float64(max(total-done, 0)) / max(rate, 1) * float64(time.Second))
		fmt.Fprintf(w, "%s: %.1f of ~%.1f MB, %.1f MB/s, ETA %s\n", what, float64(done)/1e6, float64(total)/1e6, rate/1e6, eta.Round(time.Second))
	}
}
