// Package testwait is the one way tests wait for a fact instead of sleeping:
// a test that sleeps and then asserts fails on a slow machine and cannot
// fail on a fast one when the fact is late.
package testwait

import (
	"testing"
	"time"
)

// Interval is how often For asks again.
const Interval = 20 * time.Millisecond

// For calls cond every Interval until it returns nil, and fails the test
// with what and cond's last error once timeout has passed.
func For(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(Interval)
	}
}
