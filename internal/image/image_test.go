package image_test

import (
	"archive/tar"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/pgtandem/pgtandem/internal/image"
)

func repoRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test's source")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TestImage builds the archive as `make image` does, unpacks it and runs the
// entrypoint from the unpacked filesystem.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles pgtandem and builds its image: not in -short mode")
	}
	root := repoRoot(t)
	dir := t.TempDir()
	archive := filepath.Join(dir, "pgtandem-image.tar")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref, err := image.BuildArchive(ctx, image.BuildOptions{Root: root, Out: archive})
	if err != nil {
		t.Fatal(err)
	}
	repo, version, err := image.ChartImage(filepath.Join(root, "charts", "pgtandem"))
	if err != nil {
		t.Fatal(err)
	}
	if want := repo + ":" + version; ref != want {
		t.Fatalf("built %s, but the chart runs %s by default", ref, want)
	}

	img := readArchive(t, archive, filepath.Join(dir, "layout"), ref)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{image.Entrypoint}) || cf.Config.User != "65532:65532" {
		t.Errorf("entrypoint %v, user %q: want [%s] and 65532:65532", cf.Config.Entrypoint, cf.Config.User, image.Entrypoint)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	for key, want := range map[string]string{
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.source":  image.Source,
		"org.opencontainers.image.title":   "pgtandem",
	} {
		if got := cf.Config.Labels[key]; got != want {
			t.Errorf("label %s = %q, want %q", key, got, want)
		}
	}

	rootfs := filepath.Join(dir, "rootfs")
	unpack(t, img, rootfs)
	passwd, err := os.ReadFile(filepath.Join(rootfs, "etc", "passwd"))
	if err != nil || !strings.Contains(string(passwd), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot user 65532: %q %v", passwd, err)
	}
	roots, err := os.ReadFile(filepath.Join(rootfs, image.CACertificates))
	if err != nil {
		t.Fatal(err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(roots) || strings.Count(string(roots), "BEGIN CERTIFICATE") < 100 {
		t.Errorf("%s holds %d certificates, want Mozilla's roots", image.CACertificates, strings.Count(string(roots), "BEGIN CERTIFICATE"))
	}

	out, how := runVersion(t, rootfs, cf.Config.Env)
	if want := "pgtandem " + version + "\n"; out != want {
		t.Fatalf("%s: pgtandem version printed %q, want %q", how, out, want)
	}
	t.Logf("pgtandem version from the image (%s): %s", how, strings.TrimSpace(out))

	// The same binary gives the same image: every time stamp is fixed.
	binary := filepath.Join(rootfs, image.Entrypoint)
	digests := map[v1.Hash]bool{}
	for range 2 {
		again, err := image.Build(image.Options{Binary: binary, Arch: runtime.GOARCH, Version: version, Created: time.Unix(0, 0).UTC()})
		if err != nil {
			t.Fatal(err)
		}
		d, err := again.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests[d] = true
	}
	if len(digests) != 1 {
		t.Errorf("two builds of one binary differ: %v", digests)
	}
}

// readArchive unpacks the OCI archive and returns the image named ref.
func readArchive(t *testing.T, archive, dir, ref string) v1.Image {
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s is not an OCI image layout: %v", archive, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations[image.RefNameAnnotation] != ref {
		t.Fatalf("index %+v: want one image named %s", im.Manifests, ref)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// unpack writes the image's filesystem to dir, owners included when run as
// root.
func unpack(t *testing.T, img v1.Image, dir string) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		default:
			t.Fatalf("unexpected entry %s of type %c", h.Name, h.Typeflag)
		}
		if err := os.Chmod(path, os.FileMode(h.Mode).Perm()|modeBits(h.Mode)); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(path, h.Uid, h.Gid); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func modeBits(mode int64) os.FileMode {
	var m os.FileMode
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// runVersion runs `pgtandem version` as the image would: as root, chrooted
// into the image's filesystem as user 65532 with the image's environment;
// otherwise the unpacked binary directly, and says so.
func runVersion(t *testing.T, rootfs string, env []string) (out, how string) {
	cmd := exec.Command(image.Entrypoint, "version")
	cmd.Env = env
	how = "chroot into the image's filesystem as 65532:65532"
	if os.Geteuid() == 0 {
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: image.UID, Gid: image.GID}}
	} else {
		cmd.Path = filepath.Join(rootfs, image.Entrypoint)
		how = "the unpacked binary, not chrooted (the test runs as a user that cannot chroot)"
	}
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: pgtandem version: %v\n%s", how, err, b)
	}
	return string(b), how
}
