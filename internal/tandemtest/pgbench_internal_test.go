package tandemtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadTxnLog reads lines pgbench 15 wrote at --rate 100 for one client
// whose transactions take 20 ms: it falls behind, and each line's time (the
// third field) already holds its schedule lag (the last).
func TestReadTxnLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "txn.1")
	log := "0 95 1295586 0 1796125341 610293 1275233\n" +
		"0 96 failed 0 1796125341 650611 0\n"
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	txns, err := readTxnLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(txns) != 2 {
		t.Fatalf("read %d transactions, want 2", len(txns))
	}
	end := time.Unix(1796125341, 610293000)
	if got, want := txns[0].Latency(), 1295586*time.Microsecond; got != want || !txns[0].End.Equal(end) {
		t.Errorf("first transaction: latency %v ending %v, want %v ending %v (time counts from the scheduled start, lag included)", got, txns[0].End, want, end)
	}
	if !txns[1].Failed || txns[1].Latency() != 0 {
		t.Errorf("second transaction: %+v, want failed", txns[1])
	}

	// A time shorter than its lag cannot come from a pgbench that counts
	// from the scheduled start: refused rather than read as a negative wait.
	if err := os.WriteFile(path, []byte("0 1 1000 0 1796125341 610293 5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readTxnLog(path); err == nil || !strings.Contains(err.Error(), "schedule lag") {
		t.Fatalf("time below lag: error %v, want one naming the schedule lag", err)
	}
}
