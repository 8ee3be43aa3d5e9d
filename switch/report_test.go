package switchover_test

import (
	"encoding/xml"
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/cursor"
	switchover "github.com/pgtandem/pgtandem/switch"
)

var fenceAt = time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)

// at is the time ms milliseconds after the fence started.
func at(ms float64) time.Time { return fenceAt.Add(time.Duration(ms * float64(time.Millisecond))) }

func step(name string, from, to float64, detail string) switchover.StepTiming {
	return switchover.StepTiming{Step: name, Start: at(from), End: at(to), Detail: detail}
}

func doneReport() *switchover.Report {
	return &switchover.Report{
		SwitchID: "sw-20260301-0200", From: "old", To: "new", Outcome: switchover.OutcomeDone,
		Started: at(-300), Ended: at(140), Preflight: 250 * time.Millisecond,
		Steps: []switchover.StepTiming{
			step(switchover.StepFence, 0, 4.5, "1 PgBouncer paused"),
			step(switchover.StepMarker, 4.5, 60, "applied at source lsn 0/16B3748, message 12:3:-1:0"),
			step(switchover.StepSequences, 60, 71.25, ""),
			step(switchover.StepUnfence, 71.25, 72, ""),
			step(switchover.StepRedirect, 72, 100, "PgBouncer app -> 10.0.0.8:5433/app"),
			step(switchover.StepResume, 100, 120, ""),
		},
		PauseStart: at(0), PauseEnd: at(120), Pause: 120 * time.Millisecond,
		MarkerLSN: "0/16B3748", MarkerMessageID: "12:3:-1:0", ReverseMessageID: "7:1:-1:0",
		Sequences: 4, RedirectTo: "PgBouncer app -> 10.0.0.8:5433/app",
	}
}

func undoneReport() *switchover.Report {
	return &switchover.Report{
		SwitchID: "sw-20260301-0210", From: "old", To: "new", Outcome: switchover.OutcomeUndone,
		Preflight: 200 * time.Millisecond,
		Steps: []switchover.StepTiming{
			step(switchover.StepFence, 0, 3, "1 PgBouncer paused"),
			step(switchover.StepMarker, 3, 10000, "the deadline of 10s from the fence expired"),
			step(switchover.StepUndo, 10000, 10012.5, "clients back on old"),
		},
		PauseStart: at(0), PauseEnd: at(10012.5), Pause: 10012500 * time.Microsecond,
		Error: "switch sw-20260301-0210 ran past the deadline at step marker and was undone, clients continue on the source: ...",
	}
}

func writeText(t *testing.T, r *switchover.Report) string {
	t.Helper()
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWriteTextDone(t *testing.T) {
	want := `switch sw-20260301-0200 from old to new: done
  preflight        250.0 ms
  fence            +0.0 ms     4.5 ms  1 PgBouncer paused
  marker           +4.5 ms     55.5 ms  applied at source lsn 0/16B3748, message 12:3:-1:0
  sequences        +60.0 ms    11.2 ms
  unfence          +71.2 ms    0.8 ms
  redirect         +72.0 ms    28.0 ms  PgBouncer app -> 10.0.0.8:5433/app
  resume           +100.0 ms   20.0 ms
  write pause      120.0 ms (fence start to RESUME)
  marker           lsn 0/16B3748, message 12:3:-1:0; reverse cut at message 7:1:-1:0
  clients          PgBouncer app -> 10.0.0.8:5433/app
`
	if got := writeText(t, doneReport()); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteTextUndone(t *testing.T) {
	want := `switch sw-20260301-0210 from old to new: undone
  preflight        200.0 ms
  fence            +0.0 ms     3.0 ms  1 PgBouncer paused
  marker           +3.0 ms     9997.0 ms  the deadline of 10s from the fence expired
  undo             +10000.0 ms 12.5 ms  clients back on old
  write pause      10012.5 ms (fence start to the end of the undo)
  error            switch sw-20260301-0210 ran past the deadline at step marker and was undone, clients continue on the source: ...
`
	if got := writeText(t, undoneReport()); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestWriteTextCaughtUp: when clients were served after the RESUME, and
// when they were not within the bound.
func TestWriteTextCaughtUp(t *testing.T) {
	r := doneReport()
	r.CaughtUp = 84200 * time.Microsecond
	line := "  write pause      120.0 ms (fence start to RESUME)\n  caught up        84.2 ms after the RESUME (no client waiting in PgBouncer)\n  marker "
	if got := writeText(t, r); !strings.Contains(got, line) {
		t.Errorf("want the catch-up after the write pause:\n%s\ngot:\n%s", line, got)
	}
	r.CaughtUp, r.CatchUpError = 0, "PgBouncer 10.0.0.9:6432: 3 clients of database app still wait for a server connection, the oldest for 2.1s: not within 2s of the RESUME"
	line = "  caught up        " + r.CatchUpError + "\n"
	if got := writeText(t, r); !strings.Contains(got, line) || strings.Contains(got, "after the RESUME (no client") {
		t.Errorf("want only the catch-up error:\n%s\ngot:\n%s", line, got)
	}
}

// TestWriteTextDryRun: a dry run fences nothing, so it prints the probes and
// the expected pause, never a write pause or a step.
func TestWriteTextDryRun(t *testing.T) {
	r := &switchover.Report{
		From: "old", To: "new", Outcome: switchover.OutcomeDryRun, Preflight: 310 * time.Millisecond,
		ForwardProbe: 42 * time.Millisecond, ReverseProbe: 51500 * time.Microsecond,
		SequenceRead: 1200 * time.Microsecond, Sequences: 4, ExpectedPause: 60 * time.Millisecond,
		RedirectTo: "PgBouncer app -> 10.0.0.8:5433/app",
	}
	want := `switch  from old to new: dry-run
  preflight        310.0 ms
  forward marker   42.0 ms (old -> new)
  reverse marker   51.5 ms (new -> old)
  sequence read    1.2 ms (4 sequences)
  expected pause   60.0 ms
  clients          PgBouncer app -> 10.0.0.8:5433/app
`
	if got := writeText(t, r); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("stdout closed") }

func TestWriteTextReturnsWriteError(t *testing.T) {
	if err := doneReport().WriteText(failingWriter{}); err == nil || err.Error() != "stdout closed" {
		t.Fatalf("want the writer's error, got %v", err)
	}
}

// svgTimeline is the part of the report's SVG the tests measure.
type svgTimeline struct {
	Rects []struct {
		X     float64 `xml:"x,attr"`
		Y     float64 `xml:"y,attr"`
		Width float64 `xml:"width,attr"`
		Fill  string  `xml:"fill,attr"`
	} `xml:"rect"`
	Texts []struct {
		Anchor string `xml:"text-anchor,attr"`
		Text   string `xml:",chardata"`
	} `xml:"text"`
}

// parseTimeline checks that the SVG of page is well-formed XML and decodes
// it.
func parseTimeline(t *testing.T, page string) svgTimeline {
	t.Helper()
	start, end := strings.Index(page, "<svg"), strings.LastIndex(page, "</svg>")
	if start < 0 || end < start || strings.Count(page, "<svg") != 1 {
		t.Fatalf("want one <svg>...</svg> in:\n%s", page)
	}
	var svg svgTimeline
	if err := xml.Unmarshal([]byte(page[start:end+len("</svg>")]), &svg); err != nil {
		t.Fatalf("SVG is not well-formed: %v\n%s", err, page[start:end])
	}
	return svg
}

var (
	htmlTag  = regexp.MustCompile(`<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*?(/?)>`)
	voidTags = map[string]bool{"meta": true, "br": true, "link": true, "img": true, "input": true}
)

// checkNesting checks that every element of page is closed in order. It
// can scan with a regexp because html/template escapes every '<' in text.
func checkNesting(t *testing.T, page string) {
	t.Helper()
	if !strings.HasPrefix(page, "<!DOCTYPE html>\n") {
		t.Errorf("page does not start with the doctype")
	}
	var open []string
	for _, m := range htmlTag.FindAllStringSubmatch(page, -1) {
		closing, name, selfClosing := m[1] == "/", m[2], m[3] == "/"
		switch {
		case voidTags[name] || selfClosing:
		case !closing:
			open = append(open, name)
		case len(open) == 0 || open[len(open)-1] != name:
			t.Fatalf("</%s> closes %v", name, open)
		default:
			open = open[:len(open)-1]
		}
	}
	if len(open) != 0 {
		t.Fatalf("elements left open: %v", open)
	}
}

func TestHTMLTimeline(t *testing.T) {
	r := doneReport()
	page := string(r.HTML())
	checkNesting(t, page)
	for _, want := range []string{"<title>pgtandem switch sw-20260301-0200: old → new</title>", "<td>Write pause</td><td>120.0 ms",
		"<td>Marker</td><td>lsn 0/16B3748, message 12:3:-1:0</td>", "<td>Reverse cut</td><td>message 7:1:-1:0</td>", "<td>Sequences set</td><td>4</td>"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	svg := parseTimeline(t, page)
	if len(svg.Rects) != 1+len(r.Steps) {
		t.Fatalf("want the pause shading and one bar per step (%d), got %d rects", len(r.Steps), len(svg.Rects))
	}
	pause, bars := svg.Rects[0], svg.Rects[1:]
	colors := map[string]string{"fence": "#d62728", "marker": "#1f77b4", "sequences": "#ff7f0e", "unfence": "#9467bd", "redirect": "#8c564b", "resume": "#2ca02c"}
	var labels []string
	for _, text := range svg.Texts {
		if text.Anchor == "end" {
			labels = append(labels, text.Text)
		}
	}
	if got, want := strings.Join(labels, " "), "fence marker sequences unfence redirect resume"; got != want {
		t.Errorf("step labels %q, want %q", got, want)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 0.01 }
	perMs := pause.Width / 120
	for i, bar := range bars {
		s := r.Steps[i]
		if bar.Fill != colors[s.Step] {
			t.Errorf("bar of %s: fill %q, want %q", s.Step, bar.Fill, colors[s.Step])
		}
		offset := float64(s.Start.Sub(r.PauseStart)) / float64(time.Millisecond)
		length := float64(s.Duration()) / float64(time.Millisecond)
		if !near(bar.X, pause.X+offset*perMs) || !near(bar.Width, max(length*perMs, 2)) {
			t.Errorf("bar of %s: x %.2f width %.2f, want x %.2f width %.2f", s.Step, bar.X, bar.Width, pause.X+offset*perMs, length*perMs)
		}
		if i > 0 && bar.Y <= bars[i-1].Y {
			t.Errorf("bar of %s not below the one before", s.Step)
		}
	}
	last := bars[len(bars)-1]
	if !near(last.X+last.Width, pause.X+pause.Width) || pause.X+pause.Width > 1000 {
		t.Errorf("the pause shading (x %.2f, width %.2f) does not end with the resume bar (ends at %.2f) inside the 1000 wide view",
			pause.X, pause.Width, last.X+last.Width)
	}
}

// TestHTMLCaughtUp: the catch-up after the RESUME is a row of the summary
// and a bar of its own from the end of the pause, inside the view.
func TestHTMLCaughtUp(t *testing.T) {
	r := doneReport()
	r.CaughtUp = 180 * time.Millisecond
	page := string(r.HTML())
	checkNesting(t, page)
	if want := "<td>Caught up</td><td>180.0 ms after the RESUME (no client waiting in PgBouncer)</td>"; !strings.Contains(page, want) {
		t.Errorf("page lacks %q", want)
	}
	svg := parseTimeline(t, page)
	if len(svg.Rects) != 2+len(r.Steps) {
		t.Fatalf("want the pause shading, one bar per step and the catch-up's, got %d rects", len(svg.Rects))
	}
	pause, bar := svg.Rects[0], svg.Rects[len(svg.Rects)-1]
	perMs := pause.Width / 120
	if math.Abs(bar.X-(pause.X+pause.Width)) > 0.01 || math.Abs(bar.Width-180*perMs) > 0.01 || bar.X+bar.Width > 1000 {
		t.Errorf("catch-up bar x %.2f width %.2f, want x %.2f (the pause's end) width %.2f within the 1000 wide view",
			bar.X, bar.Width, pause.X+pause.Width, 180*perMs)
	}
	var labels []string
	for _, text := range svg.Texts {
		if text.Anchor == "end" {
			labels = append(labels, text.Text)
		}
	}
	if got := labels[len(labels)-1]; got != "caught up" {
		t.Errorf("last bar labelled %q, want \"caught up\"", got)
	}
}

// TestHTMLTimelineUndone: a switch that ran past the deadline draws every
// step it ran, undo included, and its error.
func TestHTMLTimelineUndone(t *testing.T) {
	r := undoneReport()
	page := string(r.HTML())
	checkNesting(t, page)
	svg := parseTimeline(t, page)
	if len(svg.Rects) != 1+len(r.Steps) || svg.Rects[3].Fill != "#7f7f7f" {
		t.Fatalf("want the pause and bars fence, marker, undo; got %+v", svg.Rects)
	}
	if !strings.Contains(page, "<td>Error</td><td>switch sw-20260301-0210 ran past the deadline") {
		t.Errorf("page lacks the error:\n%s", page)
	}
}

// TestHTMLWithoutSteps: a refused switch has no step and no pause; the page
// must still hold finite numbers.
func TestHTMLWithoutSteps(t *testing.T) {
	page := string((&switchover.Report{From: "old", To: "new", Outcome: switchover.OutcomeDryRun}).HTML())
	checkNesting(t, page)
	svg := parseTimeline(t, page)
	if len(svg.Rects) != 1 {
		t.Fatalf("want only the pause shading, got %+v", svg.Rects)
	}
	for _, bad := range []string{"NaN", "Inf", "report: "} {
		if strings.Contains(page, bad) {
			t.Errorf("page holds %q:\n%s", bad, page)
		}
	}
}

// TestHTMLEscapes: names, message ids and errors come from the
// configuration, the clusters and hook output; none may add markup.
func TestHTMLEscapes(t *testing.T) {
	const script = "<script>alert(1)</script>"
	r := doneReport()
	r.SwitchID = "sw-" + script
	r.From = `old"><img src=x onerror=alert(2)>`
	r.MarkerMessageID = script
	r.RedirectTo = "<b>app</b>"
	r.Error = "hook failed: " + script
	r.Steps[1].Step = "marker" + script
	page := string(r.HTML())
	for _, injected := range []string{"<script", "<img", "<b>"} {
		if strings.Contains(page, injected) {
			t.Errorf("page holds %q unescaped:\n%s", injected, page)
		}
	}
	if n := strings.Count(page, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 4 {
		t.Errorf("want the switch id, message id, error and step name escaped, found %d escaped scripts", n)
	}
	checkNesting(t, page)
	svg := parseTimeline(t, page)
	if got := svg.Texts[3].Text; got != "marker"+script {
		t.Errorf("step name in the SVG decodes to %q", got)
	}
}

// TestHTMLTimelineNotResumed: a RESUME that failed leaves no pause end; the
// timeline still spans every step and keeps each bar inside the view.
func TestHTMLTimelineNotResumed(t *testing.T) {
	r := doneReport()
	r.Outcome, r.PauseEnd, r.Pause = "", time.Time{}, 0
	r.Error = "switch sw-20260301-0200: clients are redirected to new but not all resumed; run pgtandem switch --resume: ..."
	page := string(r.HTML())
	checkNesting(t, page)
	svg := parseTimeline(t, page)
	if len(svg.Rects) != 1+len(r.Steps) {
		t.Fatalf("want the pause and one bar per step, got %+v", svg.Rects)
	}
	last := svg.Rects[len(svg.Rects)-1]
	if end := last.X + last.Width; end < 969.99 || end > 970.01 {
		t.Errorf("the resume bar ends at %.2f, want at the right margin 970", end)
	}
	if !strings.Contains(page, "120.0 ms in all") {
		t.Errorf("the timeline does not span the steps' 120 ms")
	}
}

// A switch that stopped past the fence without an end (the RESUME or the
// undo failed) has no pause to report: clients may still wait.
func TestWriteTextStuckSwitch(t *testing.T) {
	for _, outcome := range []string{switchover.OutcomeNotResumed, switchover.OutcomeUndoFailed} {
		r := doneReport()
		r.Outcome, r.PauseEnd, r.Pause = outcome, time.Time{}, 0
		s := writeText(t, r)
		if strings.Contains(s, "write pause      0.0 ms") || strings.Contains(s, "end of the undo") || !strings.Contains(s, "clients may still wait") {
			t.Fatalf("%s report:\n%s", outcome, s)
		}
		if page := string(r.HTML()); !strings.Contains(page, "not ended: clients may still wait") {
			t.Fatalf("%s page has no 'not ended' pause", outcome)
		}
	}
}

// A switch whose subscriptions were prepared but whose hop row could not
// be written has Prepared and no Cut: the report still prints.
func TestWriteTextPreparedWithoutCut(t *testing.T) {
	r := doneReport()
	r.Outcome = switchover.OutcomeCutNotRecorded
	r.Prepared = []cursor.Prepared{{Subscription: "audit", Created: true}}
	if s := writeText(t, r); !strings.Contains(s, "audit on new's topic: created at the cut") {
		t.Fatalf("report:\n%s", s)
	}
}
