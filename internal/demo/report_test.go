package demo

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	switchover "github.com/pgtandem/pgtandem/switch"
)

func TestWriteReportDrawsEverySeries(t *testing.T) {
	s := &Summary{Started: time.Now(), Verify: VerifyResult{Equal: true}, CopyEnd: time.Second, CaughtUp: 2 * time.Second, LoadPaused: 4 * time.Second}
	for i := 1; i <= 8; i++ {
		s.Samples = append(s.Samples, Sample{At: time.Duration(i) * sampleInterval, WrittenRate: 900, AppliedRate: float64(800 + i),
			HasApplied: i > 2, Lag: time.Duration(i) * 10 * time.Millisecond, HasLag: i > 2})
	}
	path := filepath.Join(t.TempDir(), "report.html")
	if err := writeReport(path, s); err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	paths := regexp.MustCompile(`<path d="M[0-9.]+,[0-9.]+( L[0-9.]+,[0-9.]+)+"`).FindAll(html, -1)
	if len(paths) != 3 {
		t.Fatalf("%d drawn series, want lag, written and applied:\n%s", len(paths), html)
	}
	if !regexp.MustCompile(`<h2>Lag [^<]*\(ms\)</h2>`).Match(html) {
		t.Errorf("lags under 2 s are not shown in ms")
	}
}

// TestWriteReportDrawsSwitchTimelines checks that each switch gets its
// timeline, a bar per step and one for the longest client transaction,
// that a gap in the lag is not bridged, and that the text summary prints
// the steps under each switch.
func TestWriteReportDrawsSwitchTimelines(t *testing.T) {
	dir := t.TempDir()
	s := &Summary{Started: time.Now(), Dir: dir, Verify: VerifyResult{Equal: true}, FinalVerify: VerifyResult{Equal: true, Tables: 9},
		LoadPaused: 2 * time.Second, LoadResumed: 4 * time.Second, LoadStopped: 9 * time.Second, SwitchLoadTransactions: 500}
	for i := 1; i <= 18; i++ {
		at := time.Duration(i) * sampleInterval
		s.Samples = append(s.Samples, Sample{At: at, WrittenRate: 900, AppliedRate: 900, HasApplied: true,
			Lag: 20 * time.Millisecond, HasLag: at < 2*time.Second || at > 4*time.Second})
	}
	for i, dir := range [][2]string{{oldCluster, newCluster}, {newCluster, oldCluster}} {
		fence := s.Started.Add(time.Duration(5+3*i) * time.Second)
		rep := &switchover.Report{From: dir[0], To: dir[1], PauseStart: fence, PauseEnd: fence.Add(60 * time.Millisecond), Pause: 60 * time.Millisecond}
		at := fence
		for _, step := range []string{switchover.StepFence, switchover.StepMarker, switchover.StepSequences, switchover.StepUnfence, switchover.StepRedirect, switchover.StepResume} {
			rep.Steps = append(rep.Steps, switchover.StepTiming{Step: step, Start: at, End: at.Add(9 * time.Millisecond)})
			at = at.Add(10 * time.Millisecond)
		}
		s.Switches = append(s.Switches, &SwitchResult{Report: rep, At: fence.Sub(s.Started), Transactions: 210,
			LongestLatency: 75 * time.Millisecond, WaitedFrom: fence.Add(-10 * time.Millisecond), WaitedTo: fence.Add(65 * time.Millisecond)})
	}
	if err := writeSwitchReports(s); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "report.html")
	if err := writeReport(path, s); err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Switch old → new: write pause 60 ms", "Rollback new → old: write pause 60 ms", `href="switch-1-old-to-new.html"`,
		"longest waiting client", "Client transactions failed: <span class=\"ok\">0</span>", "old and new are equal"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if bars := regexp.MustCompile(`<rect x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="18"`).FindAll(html, -1); len(bars) != 14 {
		t.Errorf("%d timeline bars, want 2 × (6 steps + the longest waiting client)", len(bars))
	}
	lag := regexp.MustCompile(`<path d="([^"]*)" fill="none" stroke="#d62728"`).FindSubmatch(html)
	if lag == nil || strings.Count(string(lag[1]), "M") != 2 {
		t.Errorf("the lag line is not broken where the load was paused: %q", lag)
	}
	for _, res := range s.Switches {
		if page, err := os.ReadFile(res.ReportFile); err != nil || !strings.Contains(string(page), "write pause") {
			t.Errorf("switch page %s: %v", res.ReportFile, err)
		}
	}
	var text strings.Builder
	printSummary(&text, s)
	if !regexp.MustCompile(`(?m)^  rollback +new -> old under load: write pause 60 ms; .*\n +fence +\+0 ms +9 ms\n +marker +\+10 ms +9 ms$`).MatchString(text.String()) {
		t.Errorf("summary does not show the rollback's steps:\n%s", text.String())
	}
}

func TestLagPercentilesOnlyInTandem(t *testing.T) {
	var samples []Sample
	samples = append(samples, Sample{Phase: PhaseCatchUp, Lag: time.Minute, HasLag: true})
	for i := 1; i <= 100; i++ {
		samples = append(samples, Sample{Phase: PhaseSteady, Lag: time.Duration(i) * time.Millisecond, HasLag: true})
	}
	p50, p99 := lagPercentiles(samples)
	if p50 != 51*time.Millisecond || p99 != 100*time.Millisecond {
		t.Fatalf("p50 %s, p99 %s", p50, p99)
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 0.03: 0.05, 7: 10, 1001: 2000, 180: 200} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

// TestMeasureClients counts the transactions within a second of a pause,
// the failed ones apart, and finds the longest of those that waited for it.
func TestMeasureClients(t *testing.T) {
	fence := time.Now()
	at := func(ms int) time.Time { return fence.Add(time.Duration(ms) * time.Millisecond) }
	load := &writeLoad{txns: []clientTxn{
		{Scheduled: at(-3000), End: at(-2900)},         // long before: not counted
		{Scheduled: at(-700), End: at(-580)},           // the longest, before the pause
		{Scheduled: at(-10), End: at(70)},              // waited for the pause
		{Scheduled: at(20), End: at(25), Failed: true}, // failed
		{Scheduled: at(30), End: at(65)},               // waited, shorter
		{Scheduled: at(500), End: at(504)},             // after
		{Scheduled: at(1200), End: at(1203)},           // too late
	}}
	res := &SwitchResult{Report: &switchover.Report{PauseStart: fence, PauseEnd: at(60)}}
	res.measureClients(load)
	if res.Transactions != 5 || res.Failed != 1 || res.LongestLatency != 120*time.Millisecond || res.MedianLatency != 80*time.Millisecond {
		t.Errorf("transactions %d, failed %d, longest %s, median %s; want 5, 1, 120ms, 80ms", res.Transactions, res.Failed, res.LongestLatency, res.MedianLatency)
	}
	if !res.WaitedFrom.Equal(at(-10)) || !res.WaitedTo.Equal(at(70)) {
		t.Errorf("longest waiting client from %s to %s, want -10ms to 70ms", res.WaitedFrom.Sub(fence), res.WaitedTo.Sub(fence))
	}
}
