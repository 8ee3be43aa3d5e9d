package switchover

import (
	"bytes"
	"fmt"
	"html/template"
	"slices"
	"time"
)

// timelineBar is one step drawn on the timeline, in SVG user units.
type timelineBar struct {
	Step, Label, Color string
	X, Y, W            float64
}

// stepColors gives each step its color in the timeline.
var stepColors = map[string]string{
	StepFence: "#d62728", StepMarker: "#1f77b4", StepSequences: "#ff7f0e", StepUnfence: "#9467bd",
	StepRedirect: "#8c564b", StepResume: "#2ca02c", StepUndo: "#7f7f7f",
}

// HTML renders the report as one self-contained page in the style of the
// demo's report: the summary, then a timeline of the steps (one bar each,
// offsets from the fence) with the write pause shaded.
func (r *Report) HTML() []byte {
	const width, left, right, rowH = 1000.0, 120.0, 30.0, 28.0
	span := r.PauseEnd.Sub(r.PauseStart)
	for _, s := range r.Steps {
		span = max(span, s.End.Sub(r.PauseStart))
	}
	span = max(span, r.PauseEnd.Add(r.CaughtUp).Sub(r.PauseStart))
	if span <= 0 {
		span = time.Millisecond
	}
	scale := (width - left - right) / float64(span)
	var bars []timelineBar
	for i, s := range r.Steps {
		w := max(float64(s.Duration())*scale, 2)
		bars = append(bars, timelineBar{Step: s.Step, Label: ms(s.Duration()), Color: stepColors[s.Step],
			X: left + float64(s.Start.Sub(r.PauseStart))*scale, Y: 30 + float64(i)*rowH, W: w})
	}
	if r.CaughtUp > 0 {
		// Not a step: the clients' side of the pause's end.
		bars = append(bars, timelineBar{Step: "caught up", Label: ms(r.CaughtUp) + " after the RESUME", Color: "#bcbd22",
			X: left + float64(r.PauseEnd.Sub(r.PauseStart))*scale, Y: 30 + float64(len(bars))*rowH, W: max(float64(r.CaughtUp)*scale, 2)})
	}
	height := 60 + float64(len(bars))*rowH
	rows := [][2]string{
		{"Switch", r.SwitchID},
		{"Direction", r.From + " → " + r.To},
		{"Outcome", r.Outcome},
		{"Write pause", pauseText(r)},
		{"Preflight", ms(r.Preflight)},
		{"Sequences set", fmt.Sprint(r.Sequences)},
		{"Marker", fmt.Sprintf("lsn %s, message %s", r.MarkerLSN, r.MarkerMessageID)},
		{"Reverse cut", "message " + r.ReverseMessageID},
		{"Clients", r.RedirectTo},
	}
	switch {
	case r.CaughtUp > 0:
		rows = slices.Insert(rows, 4, [2]string{"Caught up", ms(r.CaughtUp) + " after the RESUME (no client waiting in PgBouncer)"})
	case r.CatchUpError != "":
		rows = slices.Insert(rows, 4, [2]string{"Caught up", r.CatchUpError})
	}
	if r.Error != "" {
		rows = append(rows, [2]string{"Error", r.Error})
	}
	var buf bytes.Buffer
	err := switchTemplate.Execute(&buf, struct {
		R                   *Report
		Rows                [][2]string
		Bars                []timelineBar
		Height, PauseW, Lft float64
		Span                string
	}{r, rows, bars, height, float64(r.Pause) * scale, left, ms(span)})
	if err != nil {
		return []byte("report: " + err.Error())
	}
	return buf.Bytes()
}

var switchTemplate = template.Must(template.New("switch").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pgtandem switch {{.R.SwitchID}}: {{.R.From}} → {{.R.To}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1060px; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td { padding: 4px 12px; border-bottom: 1px solid #ddd; vertical-align: top; }
td:first-child { font-weight: 600; white-space: nowrap; }
svg { width: 100%; height: auto; background: #fff; border: 1px solid #ddd; }
</style></head><body>
<h1>pgtandem switch {{.R.From}} → {{.R.To}}: {{.R.Outcome}}</h1>
<table>{{range .Rows}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>
<h2>Timeline (from the fence, {{.Span}} in all)</h2>
<svg viewBox="0 0 1000 {{.Height}}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline of the switch's steps">
<rect x="{{.Lft}}" y="20" width="{{.PauseW}}" height="{{.Height}}" fill="#fdd" opacity="0.5"/>
<text x="{{.Lft}}" y="14" font-size="12" fill="#d62728">write pause</text>
{{range .Bars}}<text x="110" y="{{.Y}}" dy="14" text-anchor="end" font-size="13">{{.Step}}</text>
<rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="18" fill="{{.Color}}"/>
<text x="{{.X}}" y="{{.Y}}" dx="{{.W}}" dy="14" font-size="12" fill="#444"> {{.Label}}</text>
{{end}}</svg>
<p>Steps are journaled on both clusters in pgtandem.switch_steps; the write pause lasts from the start of the fence to the end of the RESUME.</p>
</body></html>
`))

func pauseText(r *Report) string {
	switch r.Outcome {
	case OutcomeNotResumed, OutcomeUndoFailed:
		return "not ended: clients may still wait"
	case OutcomeDone:
		return ms(r.Pause) + " (fence start to RESUME)"
	}
	return ms(r.Pause) + " (fence start to the end of the undo)"
}
