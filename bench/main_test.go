package bench

import (
	"os"
	"testing"

	"github.com/pgtandem/pgtandem/internal/gctune"
)

// TestMain gives the in-process services the garbage collector settings
// the pgtandem binary runs them with.
func TestMain(m *testing.M) {
	gctune.Apply()
	os.Exit(m.Run())
}
