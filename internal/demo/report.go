package demo

import (
	"fmt"
	"html/template"
	"math"
	"os"
	"strings"
	"time"
)

// chart geometry, in SVG user units.
const (
	chartW, chartH         = 1000, 300
	padL, padR, padT, padB = 70, 20, 20, 40
)

// series is one line of a chart.
type series struct {
	Name  string
	Color string
	Path  string // the d attribute: numbers only
}

type chart struct {
	Title  string
	Unit   string
	Series []series
	Axes   template.HTML
}

// writeReport writes the summary, the charts of lag and throughput and the
// timeline of each switch as one self-contained HTML file, linking each
// switch's own page.
func writeReport(path string, s *Summary) error {
	end := max(s.LoadPaused, s.LoadStopped)
	for _, sm := range s.Samples {
		end = max(end, sm.At)
	}
	var lag, written, applied []point
	lagUnit, lagScale := "ms", 1000.0
	for _, sm := range s.Samples {
		if sm.HasLag && sm.Lag > 2*time.Second {
			lagUnit, lagScale = "s", 1
		}
	}
	for _, sm := range s.Samples {
		if sm.HasLag {
			lag = append(lag, point{sm.At, sm.Lag.Seconds() * lagScale})
		}
		written = append(written, point{sm.At, sm.WrittenRate})
		if sm.HasApplied {
			applied = append(applied, point{sm.At, sm.AppliedRate})
		}
	}
	events := []event{{s.CopyEnd, "copy done"}, {s.CaughtUp, "caught up"}, {s.LoadPaused, "load paused"}, {s.LoadResumed, "load resumed"}}
	var timelines []timeline
	for _, res := range s.Switches {
		events = append(events, event{res.At, fmt.Sprintf("%s → %s", res.title(), res.Report.To)})
		timelines = append(timelines, newTimeline(res))
	}
	events = append(events, event{s.LoadStopped, "load stopped"})
	data := struct {
		S         *Summary
		Verify    VerifyResult
		Rows      []summaryRow
		Charts    []chart
		Timelines []timeline
		When      string
	}{
		S:         s,
		Verify:    s.finalVerify(),
		Rows:      s.summaryRows(),
		When:      s.Started.Format(time.RFC1123),
		Timelines: timelines,
		Charts: []chart{
			newChart("Lag of the follower behind the cluster clients write on", lagUnit, end, events, []line{{"lag (now − source commit time of the last applied transaction), while the load writes", "#d62728", lag}}),
			newChart("Throughput", "rows/s", end, events, []line{
				{"written by clients through PgBouncer (on old; on new between switch and rollback)", "#1f77b4", written},
				{"applied on the other cluster", "#2ca02c", applied},
			}),
		},
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := reportTemplate.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

type point struct {
	at time.Duration
	v  float64
}

type line struct {
	name, color string
	points      []point
}

type event struct {
	at   time.Duration
	name string
}

// newChart scales the lines into the chart area and draws axes with ticks
// and the phase boundaries as dashed verticals.
func newChart(title, unit string, end time.Duration, events []event, lines []line) chart {
	top := 0.0
	for _, l := range lines {
		for _, p := range l.points {
			top = max(top, p.v)
		}
	}
	top = niceCeil(top)
	xs := func(d time.Duration) float64 {
		return padL + d.Seconds()/math.Max(end.Seconds(), 1)*(chartW-padL-padR)
	}
	ys := func(v float64) float64 { return chartH - padB - v/top*(chartH-padT-padB) }
	c := chart{Title: title, Unit: unit}
	for _, l := range lines {
		var d strings.Builder
		for i, p := range l.points {
			// A gap in the samples (no lag while the load is paused) is
			// left a gap rather than bridged.
			op := "L"
			if i == 0 || p.at-l.points[i-1].at > 2*sampleInterval {
				op = "M"
			}
			fmt.Fprintf(&d, "%s%.1f,%.1f ", op, xs(p.at), ys(p.v))
		}
		c.Series = append(c.Series, series{Name: l.name, Color: l.color, Path: strings.TrimSpace(d.String())})
	}
	var axes strings.Builder
	fmt.Fprintf(&axes, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`, padL, chartH-padB, chartW-padR, chartH-padB)
	fmt.Fprintf(&axes, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`, padL, padT, padL, chartH-padB)
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		y := ys(v)
		fmt.Fprintf(&axes, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`, padL, y, chartW-padR, y)
		fmt.Fprintf(&axes, `<text x="%d" y="%.1f" text-anchor="end" font-size="12">%s</text>`, padL-6, y+4, formatValue(v))
	}
	step := max(math.Ceil(end.Seconds()/10/5)*5, 5)
	for t := 0.0; t <= end.Seconds(); t += step {
		x := xs(time.Duration(t * float64(time.Second)))
		fmt.Fprintf(&axes, `<text x="%.1f" y="%d" text-anchor="middle" font-size="12">%.0fs</text>`, x, chartH-padB+18, t)
	}
	for i, e := range events {
		if e.at <= 0 {
			continue
		}
		x := xs(e.at)
		fmt.Fprintf(&axes, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="4 3"/>`, x, padT, x, chartH-padB)
		// Staggered, and left of the line near the right edge, so that
		// close events stay readable.
		anchor, dx := "start", 3.0
		if x > chartW-padR-100 {
			anchor, dx = "end", -3
		}
		fmt.Fprintf(&axes, `<text x="%.1f" y="%d" text-anchor="%s" font-size="11" fill="#666">%s</text>`,
			x+dx, padT+10+14*i, anchor, template.HTMLEscapeString(e.name))
	}
	c.Axes = template.HTML(axes.String())
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so that the
// axis ticks are round numbers.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func formatValue(v float64) string {
	if v >= 10 || v == 0 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{"ms": fmtMs}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pgtandem demo: PostgreSQL 15 → 17 rehearsal</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1060px; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td { padding: 4px 12px; border-bottom: 1px solid #ddd; vertical-align: top; }
td:first-child { font-weight: 600; white-space: nowrap; }
.ok { color: #2ca02c; font-weight: 700; } .bad { color: #d62728; font-weight: 700; }
.legend span { display: inline-block; margin-right: 1.5em; } .legend i { display: inline-block; width: 14px; height: 3px; margin-right: 6px; vertical-align: middle; }
svg { width: 100%; height: auto; background: #fff; border: 1px solid #ddd; }
</style></head><body>
<h1>pgtandem demo: upgrade rehearsal PostgreSQL 15 → 17</h1>
<p>Run of {{.When}} in <code>{{.S.Dir}}</code>. Verify{{if .S.Switches}} after the rollback{{end}}:
{{if .Verify.Equal}}<span class="ok">old and new are equal</span>{{else}}<span class="bad">old and new differ</span>{{end}}.
{{range .S.Switches}}{{.Report.From}} → {{.Report.To}}: write pause {{ms .Report.Pause}}. {{end}}
{{if .S.Switches}}Client transactions failed: {{if eq .S.FailedTransactions 0}}<span class="ok">0</span>{{else}}<span class="bad">{{.S.FailedTransactions}}</span>{{end}}.{{end}}</p>
<table>{{range .Rows}}<tr><td>{{.Name}}</td><td>{{.Value}}</td></tr>{{end}}</table>
{{range .Charts}}<h2>{{.Title}} ({{.Unit}})</h2>
<div class="legend">{{range .Series}}<span><i style="background: {{.Color}}"></i>{{.Name}}</span>{{end}}</div>
<svg viewBox="0 0 1000 300" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{{.Title}}">
{{.Axes}}
{{range .Series}}<path d="{{.Path}}" fill="none" stroke="{{.Color}}" stroke-width="2"/>
{{end}}</svg>
{{end}}
<p>Samples every 500 ms from the start of the write load. Lag is shown once apply has run and while the load writes; phases: initial copy, catching up with what was written during the copy, in tandem, load paused (marker row and verify), load resumed for the switch to new and the rollback to old, load stopped (marker row and the final verify).</p>
{{if .Timelines}}<h2>Switch and rollback under load</h2>
<p>Clients wrote through PgBouncer in transaction pooling. Each switch paused them (PAUSE and a read-only old database), waited for its marker on the other cluster, set the sequences there, pointed PgBouncer at it and resumed them: their transactions waited, none failed. Bars are the switch's steps from the fence; the shaded band is the write pause; the grey bar is the longest client transaction that ran during the pause, from when it was due to when it ended.</p>
{{range .Timelines}}<h3>{{.Title}}: write pause {{.Pause}}</h3>
<p>{{.Clients}}{{if .Link}} <a href="{{.Link}}">The switch's own report</a>.{{end}}</p>
<svg viewBox="0 0 1000 {{.Height}}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline of {{.Title}}">
{{.Body}}
</svg>
{{end}}{{end}}
</body></html>
`))
