package pg2broker

import (
	"net"
	"testing"
	"time"
)

// sizedConn returns reads of the given sizes, one per call.
type sizedConn struct {
	net.Conn
	sizes []int
}

func (c *sizedConn) Read(p []byte) (int, error) {
	n := c.sizes[0]
	c.sizes = c.sizes[1:]
	return n, nil
}

func TestCoalescingConnWaitsAfterAShortRead(t *testing.T) {
	sizes := []int{8192, 100, 8192, 4096, 2047, 0}
	var waits []int
	read := 0
	c := &coalescingConn{Conn: &sizedConn{sizes: sizes}, sleep: func(d time.Duration) {
		if d != readCoalesceWait {
			t.Errorf("waited %v, want %v", d, readCoalesceWait)
		}
		waits = append(waits, read)
	}}
	buf := make([]byte, 8192)
	for read = range sizes {
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	// Reads 2 and 5 follow the short reads 1 (100 bytes) and 4 (2047).
	if want := []int{2, 5}; len(waits) != len(want) || waits[0] != want[0] || waits[1] != want[1] {
		t.Fatalf("waited before reads %v, want %v", waits, want)
	}
}
