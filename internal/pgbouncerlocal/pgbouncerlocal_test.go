package pgbouncerlocal

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// TestStopStale starts a PgBouncer, leaves it as a killed program would,
// and checks that StopStale finds it by its pid file and stops it. No
// server is needed: PgBouncer connects to its backend only for a client.
func TestStopStale(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PgBouncer: not in -short mode")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := Start(ctx, Options{Dir: dir, Backend: &pglocal.Server{Port: 1}, Database: "app"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	entry, err := os.ReadFile(b.DatabasesFile())
	if err != nil || !strings.Contains(string(entry), "app = host=127.0.0.1 port=1 dbname=app") {
		t.Fatalf("databases file: %q, %v", entry, err)
	}
	StopStale(dir)
	testwait.For(t, 15*time.Second, "PgBouncer stopped", func() error {
		if b.Running() {
			return errors.New("still runs")
		}
		return nil
	})
	if _, err := os.Stat(pidFile(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left behind: %v", err)
	}
}
