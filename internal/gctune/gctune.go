// Package gctune sets the garbage collector for pgtandem's services: they
// allocate a little per message, millions of messages, and with Go's default
// GOGC=100 a third of their CPU went to collection. A higher GOGC with a soft
// memory limit trades some memory (still far below the 512 MiB budget of a
// 1M-row transaction) for that CPU.
package gctune

import (
	"os"
	"runtime/debug"
)

// Apply sets GOGC=400 and a 256 MiB soft memory limit, unless the GOGC or
// GOMEMLIMIT environment variables choose otherwise.
func Apply() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(256 << 20)
	}
}
