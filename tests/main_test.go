package tests

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// pgtandemBin is the pgtandem binary built once for the whole suite, so the
// end-to-end tests drive exactly what users run.
var pgtandemBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test here runs the binary against servers: none is short.
		fmt.Println("tests: end-to-end suite, not in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "pgtandem-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pgtandemBin = filepath.Join(dir, "pgtandem")
	build := exec.Command("go", "build", "-o", pgtandemBin, "../cmd/pgtandem")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pgtandem:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
