package demo

import (
	"fmt"
	"html/template"
	"math"
	"path/filepath"
	"strings"
	"time"

	switchover "github.com/pgtandem/pgtandem/switch"
)

// timeline is one switch drawn in the report: a bar per step on a time
// axis from the fence, the write pause shaded, and the longest client
// transaction that waited for it.
type timeline struct {
	Title, Pause, Clients string
	// Link is the switch's own page, next to report.html; empty when it
	// was not written.
	Link   string
	Height float64
	Body   template.HTML
}

// stepColors gives each step its color, as in the switch's own report.
var stepColors = map[string]string{
	switchover.StepFence: "#d62728", switchover.StepMarker: "#1f77b4", switchover.StepSequences: "#ff7f0e",
	switchover.StepUnfence: "#9467bd", switchover.StepRedirect: "#8c564b", switchover.StepResume: "#2ca02c",
	switchover.StepUndo: "#7f7f7f",
}

// timeline geometry, in SVG user units; the width is the charts'.
const (
	tlLabelW       = 190.0 // the column of step names
	tlTop, tlRowH  = 34.0, 26.0
	tlBarH, tlAxis = 18.0, 30.0
)

func newTimeline(res *SwitchResult) timeline {
	r := res.Report
	from, to := r.PauseStart, r.PauseEnd
	for _, st := range r.Steps {
		to = later(to, st.End)
	}
	hasClient := res.WaitedTo.After(res.WaitedFrom)
	if hasClient {
		if res.WaitedFrom.Before(from) {
			from = res.WaitedFrom
		}
		to = later(to, res.WaitedTo)
	}
	span := max(to.Sub(from), time.Millisecond)
	scale := (chartW - tlLabelW - padR - 60) / float64(span)
	x := func(t time.Time) float64 { return tlLabelW + float64(t.Sub(from))*scale }
	rows := len(r.Steps)
	if hasClient {
		rows++
	}
	bottom := tlTop + float64(rows)*tlRowH
	var b strings.Builder
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#fdd" opacity="0.6"/>`,
		x(r.PauseStart), tlTop-8, max(x(r.PauseEnd)-x(r.PauseStart), 1), bottom-tlTop+8)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="12" fill="#d62728">write pause %s</text>`, x(r.PauseStart), tlTop-14, fmtMs(r.Pause))
	bar := func(i int, label, color string, start, end time.Time) {
		y := tlTop + float64(i)*tlRowH
		w := max(x(end)-x(start), 2)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" font-size="13">%s</text>`, tlLabelW-10, y+14, template.HTMLEscapeString(label))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.0f" fill="%s"/>`, x(start), y, w, tlBarH, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="12" fill="#444">%s</text>`, x(start)+w+4, y+14, fmtMs(end.Sub(start)))
	}
	for i, st := range r.Steps {
		bar(i, st.Step, stepColors[st.Step], st.Start, st.End)
	}
	if hasClient {
		bar(len(r.Steps), "longest waiting client", "#999", res.WaitedFrom, res.WaitedTo)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, tlLabelW, bottom+4, float64(chartW-padR), bottom+4)
	// Ticks in round milliseconds from the fence.
	step := niceCeil(float64(span.Milliseconds()) / 6)
	for ms := math.Ceil(msSince(r.PauseStart, from)/step) * step; ms <= msSince(r.PauseStart, to); ms += step {
		tx := x(r.PauseStart.Add(time.Duration(ms * float64(time.Millisecond))))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, tx, bottom+4, tx, bottom+8)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="12">%+.0f ms</text>`, tx, bottom+22, ms)
	}
	t := timeline{
		Title:  fmt.Sprintf("%s %s → %s", strings.ToUpper(res.title()[:1])+res.title()[1:], r.From, r.To),
		Pause:  fmtMs(r.Pause),
		Height: bottom + tlAxis,
		Body:   template.HTML(b.String()),
		Clients: fmt.Sprintf("%d client transactions ran within %s of the pause, %d failed; the longest took %s, the median %s; of those that waited for the pause, the longest took %s.",
			res.Transactions, latencyMargin, res.Failed, fmtMs(res.LongestLatency), fmtMs(res.MedianLatency), fmtMs(res.WaitedTo.Sub(res.WaitedFrom))),
	}
	if res.ReportFile != "" {
		t.Link = filepath.Base(res.ReportFile)
	}
	return t
}

// msSince is t - origin in milliseconds, negative before origin.
func msSince(origin, t time.Time) float64 {
	return float64(t.Sub(origin)) / float64(time.Millisecond)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
