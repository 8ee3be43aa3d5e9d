// Package image builds pgtandem's container image without a container
// engine: the static binary, CA certificates and a non-root user on an empty
// base, assembled with go-containerregistry and written as an OCI image
// layout in a tar file (an "OCI archive", what `podman load`, `docker load`
// 25+ and `skopeo copy oci-archive:` read).
//
// The image's name is the Helm chart's default image: the repository of
// charts/pgtandem/values.yaml (image.repository) and the chart's appVersion
// as tag, read from the chart so that the two cannot drift. `make image`
// runs [BuildArchive] through ./internal/image/build; the image test runs
// the same function.
//
// # Contents
//
//	/usr/local/bin/pgtandem            the entrypoint, CGO_ENABLED=0, -trimpath
//	/etc/ssl/certs/ca-certificates.crt Mozilla's roots (golang.org/x/crypto/x509roots/fallback/bundle)
//	/etc/passwd, /etc/group            root and nonroot (65532), the user the image runs as
//	/etc/nsswitch.conf                 "hosts: files dns", as Go's resolver expects
//	/home/nonroot, /tmp                the only writable directories (and only without a read-only root)
//
// Timestamps are fixed ($SOURCE_DATE_EPOCH, else the Unix epoch), so the
// same binary gives the same image digest.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
	"sigs.k8s.io/yaml"
)

// What the image promises its users; the chart and the image test rely on
// these.
const (
	// Entrypoint is the path of the binary and the image's entrypoint.
	Entrypoint = "/usr/local/bin/pgtandem"
	// UID and GID are the non-root user and group the image runs as.
	UID = 65532
	GID = 65532
	// CACertificates is where Go (and libpq) look for the system roots.
	CACertificates = "/etc/ssl/certs/ca-certificates.crt"
	// Source is the project's home, the image's source label.
	Source = "https://github.com/pgtandem/pgtandem"
)

// RefNameAnnotation names the image inside the OCI layout's index.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Options describe one image.
type Options struct {
	// Binary is a statically linked linux pgtandem (see [CompileBinary]).
	Binary string
	// Arch is the binary's GOARCH.
	Arch string
	// Version is pgtandem's version (the chart's appVersion) and Revision
	// the source commit, empty when unknown.
	Version  string
	Revision string
	// Created stamps the image config and every file.
	Created time.Time
}

// Build assembles the image from the binary.
func Build(o Options) (v1.Image, error) {
	binary, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("image: read the binary: %w", err)
	}
	roots := caBundle()
	rootfs, err := layerTar(o.Created, binary, roots)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(rootfs)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, fmt.Errorf("image: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.Arch
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint: []string{Entrypoint},
		User:       fmt.Sprintf("%d:%d", UID, GID),
		WorkingDir: "/home/nonroot",
		Env:        []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=" + CACertificates},
		Labels:     labels(o),
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return img, nil
}

// labels are the image's OCI labels.
func labels(o Options) map[string]string {
	out := map[string]string{
		"org.opencontainers.image.title":       "pgtandem",
		"org.opencontainers.image.description": "Keeps two PostgreSQL clusters of different major versions in tandem through Apache Pulsar",
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
	}
	if o.Revision != "" {
		out["org.opencontainers.image.revision"] = o.Revision
	}
	return out
}

// caBundle is Mozilla's root store as PEM. It comes from a pinned Go module,
// not from the build machine, so every machine builds the same image. Roots
// that NSS trusts only for certificates issued before a date are left out:
// a PEM bundle cannot carry that constraint, and trusting them without it
// would trust more than NSS does.
func caBundle() []byte {
	var b bytes.Buffer
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate})
	}
	return b.Bytes()
}

// layerTar is the image's one layer, entries in path order with fixed
// owners and times.
func layerTar(created time.Time, binary, roots []byte) ([]byte, error) {
	type entry struct {
		path     string
		mode     int64
		uid, gid int
		body     []byte // nil for a directory
	}
	entries := []entry{
		{path: "etc/", mode: 0o755},
		{path: "etc/group", mode: 0o644, body: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", GID)},
		{path: "etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		{path: "etc/passwd", mode: 0o644, body: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)},
		{path: "etc/ssl/", mode: 0o755},
		{path: "etc/ssl/certs/", mode: 0o755},
		{path: strings.TrimPrefix(CACertificates, "/"), mode: 0o644, body: roots},
		{path: "home/", mode: 0o755},
		{path: "home/nonroot/", mode: 0o700, uid: UID, gid: GID},
		{path: "tmp/", mode: 0o1777},
		{path: "usr/", mode: 0o755},
		{path: "usr/local/", mode: 0o755},
		{path: "usr/local/bin/", mode: 0o755},
		{path: strings.TrimPrefix(Entrypoint, "/"), mode: 0o755, body: binary},
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.path, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: created, Format: tar.FormatPAX}
		if e.body == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: layer %s: %w", e.path, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("image: layer %s: %w", e.path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteOCIArchive writes img, named ref, as an OCI image layout in a tar
// file at path.
func WriteOCIArchive(path string, img v1.Image, ref string) error {
	dir, err := os.MkdirTemp("", "pgtandem-image-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: OCI layout: %w", err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{RefNameAnnotation: ref})); err != nil {
		return fmt.Errorf("image: OCI layout: %w", err)
	}
	return tarDir(dir, path)
}

// tarDir packs the files under dir into a tar at path, in path order.
func tarDir(dir, path string) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range files {
		body, err := os.ReadFile(p)
		if err != nil {
			f.Close()
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(h); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(body); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// CompileBinary builds ./cmd/pgtandem of the module at root as a static
// linux binary for arch, stamped with version.
func CompileBinary(ctx context.Context, root, out, version, arch string) error {
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+version, "-o", out, "./cmd/pgtandem")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("image: go build ./cmd/pgtandem: %v\n%s", err, b)
	}
	return nil
}

// ChartImage is the image the chart at dir runs by default: values.yaml's
// image.repository and Chart.yaml's appVersion.
func ChartImage(dir string) (repository, version string, err error) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct {
			Repository string `json:"repository"`
		} `json:"image"`
	}
	for file, into := range map[string]any{"Chart.yaml": &chart, "values.yaml": &values} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return "", "", fmt.Errorf("image: the chart's default image: %w", err)
		}
		if err := yaml.Unmarshal(b, into); err != nil {
			return "", "", fmt.Errorf("image: %s: %w", filepath.Join(dir, file), err)
		}
	}
	if values.Image.Repository == "" || chart.AppVersion == "" {
		return "", "", fmt.Errorf("image: %s names no image.repository or appVersion", dir)
	}
	return values.Image.Repository, chart.AppVersion, nil
}

// BuildOptions say where [BuildArchive] works.
type BuildOptions struct {
	// Root is the module's root folder; the chart is read from
	// charts/pgtandem below it.
	Root string
	// Out is the archive to write.
	Out string
	// Arch is the GOARCH of the image; empty means this machine's.
	Arch string
}

// BuildArchive compiles the binary, builds the image the chart runs by
// default and writes it to o.Out. It returns the image's name.
func BuildArchive(ctx context.Context, o BuildOptions) (string, error) {
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	repo, version, err := ChartImage(filepath.Join(o.Root, "charts", "pgtandem"))
	if err != nil {
		return "", err
	}
	work, err := os.MkdirTemp("", "pgtandem-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	binary := filepath.Join(work, "pgtandem")
	if err := CompileBinary(ctx, o.Root, binary, version, o.Arch); err != nil {
		return "", err
	}
	created, err := sourceDate()
	if err != nil {
		return "", err
	}
	img, err := Build(Options{Binary: binary, Arch: o.Arch, Version: version, Revision: revision(ctx, o.Root), Created: created})
	if err != nil {
		return "", err
	}
	ref := repo + ":" + version
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return "", err
	}
	return ref, WriteOCIArchive(o.Out, img, ref)
}

// sourceDate is $SOURCE_DATE_EPOCH (the reproducible-builds convention),
// else the Unix epoch.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("image: SOURCE_DATE_EPOCH %q is not a number of seconds", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// revision is the checked-out commit, or empty outside a git checkout.
func revision(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "rev-parse", "HEAD")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
