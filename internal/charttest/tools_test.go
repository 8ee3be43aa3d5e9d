package charttest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the module's root folder (this file is internal/charttest/tools_test.go).
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source of the chart tests")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "charts", "pgtandem") }

// toolVersions reads scripts/chart-tools.env, the one place the versions of
// helm and of the Kubernetes schemas are pinned.
func toolVersions(t testing.TB) (helmVersion string, kubeVersions []string) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "chart-tools.env"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		value = strings.Trim(value, `"`)
		switch key {
		case "HELM_VERSION":
			helmVersion = value
		case "KUBE_VERSIONS":
			kubeVersions = strings.Fields(value)
		}
	}
	if helmVersion == "" || len(kubeVersions) < 2 {
		t.Fatalf("scripts/chart-tools.env names no HELM_VERSION or fewer than two KUBE_VERSIONS")
	}
	return helmVersion, kubeVersions
}

// needTools skips under -short, as the other tests that need installed
// servers or tools do.
func needTools(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs helm: not in -short mode")
	}
}

// helmBinary is the pinned helm; its absence fails the test.
func helmBinary(t testing.TB) string {
	t.Helper()
	needTools(t)
	version, _ := toolVersions(t)
	path := filepath.Join(repoRoot(t), ".cache", "tools", "helm-"+version, "helm")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("helm %s is not installed at %s: run `make deps` (scripts/install-deps.sh builds it once)", version, path)
	}
	return path
}

// swaggerFile is the OpenAPI v2 document of Kubernetes version v (e.g.
// v1.30.14) in the Go module cache.
func swaggerFile(t testing.TB, v string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "k8s.io", "kubernetes@"+v, "api", "openapi-spec", "swagger.json")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the OpenAPI schema of Kubernetes %s is not in the Go module cache (%v): run `make deps` (it runs go mod download k8s.io/kubernetes@%s)", v, err, v)
	}
	return path
}

// kubeMinor turns v1.30.14 into 1.30.14 (helm's --kube-version takes either;
// pod-security-admission wants v1.30).
func kubeMinor(v string) string {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	return "v" + parts[0] + "." + parts[1]
}

var (
	pgtandemOnce sync.Once
	pgtandemPath string
	pgtandemErr  error
)

// pgtandemBinary builds ./cmd/pgtandem once per test run.
func pgtandemBinary(t testing.TB) string {
	t.Helper()
	pgtandemOnce.Do(func() {
		dir, err := os.MkdirTemp("", "charttest-pgtandem-")
		if err != nil {
			pgtandemErr = err
			return
		}
		pgtandemPath = filepath.Join(dir, "pgtandem")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", pgtandemPath, "./cmd/pgtandem")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			pgtandemErr = err
			t.Logf("%s", out)
		}
	})
	if pgtandemErr != nil {
		t.Fatalf("build pgtandem: %v", pgtandemErr)
	}
	return pgtandemPath
}
