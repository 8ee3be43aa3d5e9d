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
// end-to-end tests drive exactly what users run; auditsinkBin the example
// consumer of examples/auditsink.
var pgtandemBin, auditsinkBin string

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
	pgtandemBin, auditsinkBin = filepath.Join(dir, "pgtandem"), filepath.Join(dir, "auditsink")
	for bin, pkg := range map[string]string{pgtandemBin: "../cmd/pgtandem", auditsinkBin: "../examples/auditsink"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
