package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func appendSync(t *testing.T, l *Log, r *Record) AppendResult {
	t.Helper()
	done := make(chan AppendResult, 1)
	l.Append(r, func(res AppendResult) { done <- res })
	res := <-done
	if res.Err != nil {
		t.Fatalf("append: %v", res.Err)
	}
	return res
}

func record(producer string, seq uint64, payload string) *Record {
	return &Record{PublishTime: time.Now().UnixMilli(), ProducerName: producer, SequenceID: seq, HighestSequenceID: seq, NumMessages: 1, ChunkID: -1, Payload: []byte(payload)}
}

func openLog(t *testing.T, dir string, opts LogOptions) *Log {
	t.Helper()
	l, err := OpenLog(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func readAll(t *testing.T, l *Log) []string {
	t.Helper()
	var out []string
	for p, ok := l.After(Earliest); ok; p, ok = l.After(p) {
		e, err := l.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(e.Payload))
	}
	return out
}

func TestLogCutsOffDamagedTail(t *testing.T) {
	for name, damage := range map[string]func(path string, size int64){
		"torn header": func(path string, _ int64) { appendBytes(t, path, []byte{0, 0, 1}) },
		"torn body":   func(path string, _ int64) { appendBytes(t, path, []byte{0, 0, 0, 200, 1, 2, 3, 4, 5}) },
		"bad checksum of last record": func(path string, size int64) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{'X'}, size-1); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := OpenLog(dir, LogOptions{})
			if err != nil {
				t.Fatal(err)
			}
			appendSync(t, l, record("p", 0, "a"))
			appendSync(t, l, record("p", 1, "b"))
			size := l.Stats().Bytes
			l.Close()
			damage(filepath.Join(dir, "00000000000000000001.log"), size)

			l2 := openLog(t, dir, LogOptions{})
			want := []string{"a", "b"}
			if name == "bad checksum of last record" {
				want = []string{"a"}
			}
			if got := readAll(t, l2); len(got) != len(want) || got[len(got)-1] != want[len(want)-1] {
				t.Fatalf("after recovery the log holds %v, want %v", got, want)
			}
			appendSync(t, l2, record("p", 2, "c"))
			if got := readAll(t, l2); got[len(got)-1] != "c" {
				t.Fatalf("append after recovery: %v", got)
			}
		})
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestLogRefusesDamageInsideOlderSegment(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLog(dir, LogOptions{SegmentSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	appendSync(t, l, record("p", 0, "a"))
	appendSync(t, l, record("p", 1, "b"))
	l.Close()
	appendBytes(t, filepath.Join(dir, "00000000000000000001.log"), []byte{0, 0, 1})
	if _, err := OpenLog(dir, LogOptions{SegmentSize: 1}); !IsCorrupt(err) {
		t.Fatalf("got %v, want a corrupt log error", err)
	}
}

func TestDedupSurvivesReopenAndRetention(t *testing.T) {
	dir := t.TempDir()
	opts := LogOptions{Dedup: true, SegmentSize: 1}
	l, err := OpenLog(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	appendSync(t, l, record("p", 0, "a"))
	appendSync(t, l, record("p", 1, "b"))
	if res := appendSync(t, l, record("p", 1, "b again")); !res.Duplicate {
		t.Fatal("resent sequence id 1 was stored again")
	}
	// Chunks share a sequence id and are told apart by chunk id.
	for chunk := range int32(3) {
		r := record("p", 2, "chunk")
		r.ChunkID, r.NumChunks = chunk, 3
		if res := appendSync(t, l, r); res.Duplicate {
			t.Fatalf("chunk %d taken for a duplicate", chunk)
		}
	}
	n, err := l.Retain(Latest, 1, 0, time.Now())
	if err != nil || n == 0 {
		t.Fatalf("retention deleted %d segments: %v", n, err)
	}
	l.Close()

	l2 := openLog(t, dir, opts)
	if got := l2.LastSequenceID("p"); got != 2 {
		t.Fatalf("last sequence id after reopen is %d, want 2", got)
	}
	if res := appendSync(t, l2, record("p", 0, "a again")); !res.Duplicate {
		t.Fatal("sequence id 0, whose segment retention deleted, was stored again")
	}
}

func TestRetentionKeepsUnconsumedSegments(t *testing.T) {
	l := openLog(t, t.TempDir(), LogOptions{SegmentSize: 1})
	first := appendSync(t, l, record("p", 0, "a")).Pos
	appendSync(t, l, record("p", 1, "b"))
	appendSync(t, l, record("p", 2, "c"))
	if n, _ := l.Retain(Earliest, 1, 0, time.Now()); n != 0 {
		t.Fatalf("retention deleted %d segments nobody consumed", n)
	}
	if n, _ := l.Retain(first, 1, 0, time.Now()); n != 1 {
		t.Fatalf("retention deleted %d segments, want the consumed one", n)
	}
	if got := readAll(t, l); len(got) != 2 || got[0] != "b" {
		t.Fatalf("log holds %v after retention", got)
	}
}
