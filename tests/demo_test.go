package tests

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `pgtandem demo` end to end with a short load, checks that
// it switches to new and rolls back under load with no failed client
// transaction, ends with verify equal and leaves no process behind, and
// renders its report.html in headless Chromium to check the charts draw.
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgtandemBin, "demo", "--dir", dir, "--load-seconds", "10", "--scale", "1")
	out, err := cmd.CombinedOutput()
	t.Logf("pgtandem demo:\n%s", out)
	if err != nil {
		t.Fatalf("pgtandem demo: %v", err)
	}
	for _, want := range []string{"caught up in", "marker row written on old reached new", "reverse flow armed", "report: " + filepath.Join(dir, "report.html")} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^  verify +equal: `),
		// Both switches, each with its pause and its step timeline.
		regexp.MustCompile(`(?m)^  switch +old -> new under load: write pause \d+ ms; client transactions around it: [1-9]\d*, 0 failed, longest \d+ ms.*\n +fence +\+\d+ ms `),
		regexp.MustCompile(`(?m)^  rollback +new -> old under load: write pause \d+ ms; client transactions around it: [1-9]\d*, 0 failed, longest \d+ ms.*\n +fence +\+\d+ ms `),
		regexp.MustCompile(`(?m)^ +resume +\+\d+ ms `),
		regexp.MustCompile(`(?m)^  clients +[1-9]\d* transactions through PgBouncer .*, 0 failed in the whole rehearsal$`),
		regexp.MustCompile(`(?m)^  final verify +equal: `),
		// The downstream consumer followed the writes old -> new -> old.
		regexp.MustCompile(`(?m)^  downstream +a consumer of the topics \(package cursor\): [1-9]\d* load transactions read from old -> new -> old, hops old -> new at message \S+, new -> old at message \S+; 0 duplicated, 0 out of order, 0 of the switch phase missing$`),
	} {
		if !want.Match(out) {
			t.Errorf("summary does not match %s", want)
		}
	}
	for _, page := range []string{"switch-1-old-to-new.html", "switch-2-new-to-old.html"} {
		html, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil || !strings.Contains(string(html), "write pause") {
			t.Errorf("switch report %s does not show the write pause: %v", page, err)
		}
	}
	checkNothingRunsIn(t, dir)
	checkReportRenders(t, filepath.Join(dir, "report.html"))
}

// chartPath is a drawn line of the report: a move and at least two
// segments.
var chartPath = regexp.MustCompile(`<path d="M[0-9.]+,[0-9.]+ L[0-9.]+,[0-9.]+ L[0-9.]+,[0-9.]+`)

func checkReportRenders(t *testing.T, report string) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is missing: scripts/install-deps.sh installs it")
	}
	profile := t.TempDir()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + profile}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dom, err := exec.CommandContext(ctx, chromium, append(args, "--dump-dom", "file://"+report)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	if n := len(chartPath.FindAll(dom, -1)); n < 3 {
		t.Fatalf("rendered report has %d drawn chart lines, want lag, written and applied:\n%.3000s", n, dom)
	}
	for _, want := range []string{"old and new are equal", `Client transactions failed: <span class="ok">0</span>`,
		"Switch old → new: write pause", "Rollback new → old: write pause", "longest waiting client"} {
		if !strings.Contains(string(dom), want) {
			t.Errorf("rendered report lacks %q", want)
		}
	}
	// The screenshot is kept for a human look when PGTANDEM_DEMO_SCREENSHOT names a file.
	shot := os.Getenv("PGTANDEM_DEMO_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "report.png")
	}
	if out, err := exec.CommandContext(ctx, chromium, append(args, "--screenshot="+shot, "--window-size=1200,1600", "file://"+report)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	st, err := os.Stat(shot)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < 10000 {
		t.Fatalf("screenshot %s has only %d bytes", shot, st.Size())
	}
}

// TestDemoInterrupted sends SIGINT once the pipeline runs, as Ctrl-C
// would, and checks that the demo exits 130 with no server left running.
func TestDemoInterrupted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	err := runDemoReacting(t, []string{"--dir", dir, "--load-seconds", "60", "--scale", "1"}, func(line string, p *os.Process) {
		if strings.Contains(line, "pg2broker and broker2pg started") {
			_ = p.Signal(os.Interrupt)
		}
	})
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted demo: %v, want exit code 130", err)
	}
	checkNothingRunsIn(t, dir)
}

// TestDemoKeep runs `pgtandem demo --keep`, uses the pgtandem.yaml it
// writes with `pgtandem status` and `pgtandem switch --dry-run` while
// everything runs, then stops it with SIGINT and checks that nothing is
// left running.
func TestDemoKeep(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	err := runDemoReacting(t, []string{"--keep", "--dir", dir, "--load-seconds", "5", "--scale", "1"}, func(line string, p *os.Process) {
		if !strings.Contains(line, "verify --from old --to new") {
			return
		}
		config := filepath.Join(dir, "pgtandem.yaml")
		status := exec.Command(pgtandemBin, "--config", config, "status")
		if st, err := status.CombinedOutput(); err != nil || !strings.Contains(string(st), "pgtandem_old") {
			t.Errorf("status with the demo's config: %v\n%s", err, st)
		}
		dryRun := exec.Command(pgtandemBin, "--config", config, "switch", "--from", "old", "--to", "new", "--dry-run")
		if sw, err := dryRun.CombinedOutput(); err != nil || !strings.Contains(string(sw), "expected pause") {
			t.Errorf("switch --dry-run with the demo's config: %v\n%s", err, sw)
		}
		_ = p.Signal(os.Interrupt)
	})
	if err != nil {
		t.Fatalf("demo --keep ended by SIGINT: %v, want exit code 0", err)
	}
	checkNothingRunsIn(t, dir)
}

// runDemoReacting runs `pgtandem demo args...`, calls react with each line
// it prints, and returns how it ended.
func runDemoReacting(t *testing.T, args []string, react func(line string, p *os.Process)) error {
	t.Helper()
	cmd := exec.Command(pgtandemBin, append([]string{"demo"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for sc := bufio.NewScanner(stdout); sc.Scan(); {
		out.WriteString(sc.Text() + "\n")
		react(sc.Text(), cmd.Process)
	}
	err = cmd.Wait()
	t.Logf("pgtandem demo %s:\n%s", strings.Join(args, " "), out.String())
	return err
}

func checkNothingRunsIn(t *testing.T, dir string) {
	t.Helper()
	if ps, err := exec.Command("pgrep", "-af", dir).Output(); err == nil {
		t.Errorf("processes left running in %s:\n%s", dir, ps)
	}
}
