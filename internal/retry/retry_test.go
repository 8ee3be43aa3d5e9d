package retry

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndStartsOver(t *testing.T) {
	b := New(4 * time.Second)
	want := First
	for i := range 6 {
		got := b.Next(time.Second)
		if got < want/2 || got > want*3/2 {
			t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, got, want/2, want*3/2)
		}
		want = min(2*want, 4*time.Second)
	}
	if got := b.Next(healthy); got > First*3/2 {
		t.Fatalf("after a healthy attempt: delay %v, want about %v", got, First)
	}
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[New(time.Minute).Next(0)] = true
	}
	if len(seen) < 2 {
		t.Fatal("20 first delays are all equal: no jitter")
	}
}
