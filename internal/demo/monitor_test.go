package demo

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vbauerster/mpb/v8"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// TestStatusBlock drives the terminal status block without a terminal:
// the lines with something to say are drawn, a finished step comes out
// whole above them, a line that goes is never drawn blank, and once
// stopped, steps go straight through.
func TestStatusBlock(t *testing.T) {
	out := &lockedBuffer{}
	load := &writeLoad{rowsThrough: []int64{0, 3, 7}}
	status := newStatusBlock(out, mpb.WithWidth(120), mpb.WithAutoRefresh(), mpb.WithRefreshRate(10*time.Millisecond))
	m := runMonitor(out, status, load, flow{writer: oldCluster, follower: newCluster})
	m.copyProgress(bootstrap.CopyProgress{Bytes: 2e6, TotalBytes: 8e6})
	m.step("init copied %d rows", 42)
	testwait.For(t, 10*time.Second, "the status lines and the step drawn", func() error {
		text := out.String()
		for _, want := range []string{"phase   initial copy (", "copy       2.0 of ~8.0 MB", "old ", "2 transactions, 7 rows", "init copied 42 rows\n"} {
			if !strings.Contains(text, want) {
				return fmt.Errorf("no %q yet in %q", want, text)
			}
		}
		return nil
	})
	if text := out.String(); strings.Contains(text, "new ") {
		t.Errorf("the line of new is drawn before anything was applied:\n%q", text)
	}
	m.setCopyLine("")
	m.step("copy done")
	testwait.For(t, 10*time.Second, "the step after the copy drawn", func() error {
		if text := out.String(); !strings.Contains(text, "copy done\n") {
			return fmt.Errorf("not yet in %q", text)
		}
		return nil
	})
	samples := m.stop()
	if text := out.String(); strings.Contains(text, "\x1b[36m\x1b[0m") {
		t.Errorf("a blank line was drawn for the copy line once it went:\n%q", text)
	}
	if len(samples) == 0 {
		t.Error("no samples after the old line was drawn")
	}
	m.step("after the block")
	if !strings.HasSuffix(out.String(), "after the block\n") {
		t.Errorf("a step after stop did not come out last:\n%q", out.String())
	}
}

// lockedBuffer is a bytes.Buffer that mpb's goroutines write while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
