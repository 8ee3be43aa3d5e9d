// Command build writes pgtandem's container image as an OCI archive:
//
//	go run ./internal/image/build -o bin/pgtandem-image.tar [-arch arm64]
//
// It is what `make image` runs; see package image.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgtandem/pgtandem/internal/image"
)

func main() {
	out := flag.String("o", "bin/pgtandem-image.tar", "the OCI archive to write")
	arch := flag.String("arch", "", "GOARCH of the image (default: this machine's)")
	flag.Parse()
	root, err := moduleRoot()
	if err == nil {
		var ref string
		if ref, err = image.BuildArchive(context.Background(), image.BuildOptions{Root: root, Out: *out, Arch: *arch}); err == nil {
			fmt.Printf("wrote %s (%s)\n", *out, ref)
			return
		}
	}
	fmt.Fprintln(os.Stderr, "build image:", err)
	os.Exit(1)
}

// moduleRoot is the folder holding go.mod, from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above: run it inside the pgtandem checkout")
		}
		dir = parent
	}
}
