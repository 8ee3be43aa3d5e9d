package demo

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

func TestWriteReportDrawsEverySeries(t *testing.T) {
	s := &Summary{Started: time.Now(), VerifyEqual: true, CopyEnd: time.Second, CaughtUp: 2 * time.Second, LoadPaused: 4 * time.Second}
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
	if !regexp.MustCompile(`Lag of new behind old \(ms\)`).Match(html) {
		t.Errorf("lags under 2 s are not shown in ms")
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
