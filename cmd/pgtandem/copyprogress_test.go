package main

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

// copyState is a copy 10 seconds in: one table done, one being copied
// (2,000 of ~8,000 rows), one waiting.
func copyState(start time.Time) bootstrap.CopyProgress {
	return bootstrap.CopyProgress{Bytes: 30e6, TotalBytes: 60e6, Tables: []bootstrap.TableProgress{
		{Table: "public.done", Rows: 1000, EstimatedRows: 1000, Bytes: 20e6, EstimatedBytes: 20e6, Started: start, Done: true, Took: 5 * time.Second},
		{Table: "public.busy", Rows: 2000, EstimatedRows: 8000, Bytes: 10e6, EstimatedBytes: 30e6, Started: start.Add(5 * time.Second)},
		{Table: "public.waiting", EstimatedRows: 10, EstimatedBytes: 10e6},
	}}
}

// TestCopyLines checks the progress lines of a run without a terminal: the
// whole copy and every table being copied, every 5 seconds.
func TestCopyLines(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	var out bytes.Buffer
	l := &copyLines{w: &out, what: "init copy", every: 5 * time.Second, now: func() time.Time { return now }}
	l.update(bootstrap.CopyProgress{})
	out.Reset()
	now = start.Add(10 * time.Second)
	l.update(copyState(start))
	want := "init copy: 30.0 of ~60.0 MB, 3.0 MB/s, ETA 10s, 1 of 3 tables done\n" +
		"init copy:   public.busy: 2,000 of ~8,000 rows, 2.0 MB/s, ETA 15s\n"
	if out.String() != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	now = start.Add(12 * time.Second)
	l.update(copyState(start))
	if out.Len() != 0 {
		t.Fatalf("printed again after 2 s: %q", out.String())
	}
}

func TestProgressText(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
	// Past the estimate, a table is not done until its copy says so.
	over := bootstrap.TableProgress{Rows: 120, EstimatedRows: 100, Started: time.Now()}
	if f := fraction(over); f >= 1 {
		t.Errorf("fraction of a table past its estimate: %v", f)
	}
	if s := tableStatus(over, over.Started.Add(time.Second)); !strings.HasPrefix(s, "120 of ~120 rows") {
		t.Errorf("status past the estimate: %q", s)
	}
	unanalysed := bootstrap.TableProgress{Rows: 5, Bytes: 25, EstimatedBytes: 100}
	if f := fraction(unanalysed); f != 0.25 {
		t.Errorf("fraction without a row estimate = %v, want 0.25 (by bytes)", f)
	}
	if got := eta(0, time.Minute); got != "?" {
		t.Errorf("eta with nothing done = %q", got)
	}
}

// TestCopyBars drives the terminal display without a terminal: a bar
// appears for the table being copied only, goes when it is done, and log
// lines written meanwhile come out whole.
func TestCopyBars(t *testing.T) {
	start := time.Now().Add(-10 * time.Second)
	out := &lockedBuffer{}
	b := newCopyBars(out, "init copy", time.Now, mpb.WithWidth(160), mpb.WithAutoRefresh(), mpb.WithRefreshRate(10*time.Millisecond))
	logs := &aboveBars{p: b.p, after: out}
	p := copyState(start)
	b.update(p)
	if _, ok := b.bars["public.busy"]; !ok || len(b.bars) != 1 {
		t.Fatalf("bars %v, want one for public.busy", b.bars)
	}
	if _, err := logs.Write([]byte("level=INFO msg=copied table=public.done\n")); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the bars and the log line drawn", func() error {
		text := out.String()
		for _, want := range []string{"public.busy", "2,000 of ~8,000 rows", "1 of 3 tables done", "level=INFO msg=copied table=public.done\n"} {
			if !strings.Contains(text, want) {
				return fmt.Errorf("no %q yet in %q", want, text)
			}
		}
		return nil
	})
	p.Tables[1].Done, p.Tables[1].Rows = true, 8000
	p.Tables[2].Started, p.Tables[2].Done = time.Now(), true
	p.Bytes = p.TotalBytes
	b.update(p)
	if len(b.bars) != 0 {
		t.Fatalf("bars left after every table is done: %v", b.bars)
	}
	b.stop()
	if _, err := logs.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"public.busy", "2,000 of ~8,000 rows", "1 of 3 tables done", "level=INFO msg=copied table=public.done\n", "after\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("display lacks %q:\n%q", want, text)
		}
	}
	if strings.Contains(text, "public.waiting [") {
		t.Errorf("a bar was drawn for a table that never ran while shown:\n%q", text)
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
