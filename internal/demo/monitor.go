package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/logging"
)

// sampleInterval is how often lag and throughput are measured.
const sampleInterval = 500 * time.Millisecond

// Phase is the stage of the rehearsal a sample was taken in.
type Phase int

const (
	PhaseCopy    Phase = iota // init copies old into new
	PhaseCatchUp              // apply works through what was written during the copy
	PhaseSteady               // new follows old under the load
	PhaseDrain                // load paused, marker and verify
	PhaseSwitch               // load on again: switch to new and roll back to old under it
)

func (p Phase) String() string {
	return [...]string{"initial copy", "catching up", "in tandem", "load paused", "switch and rollback"}[p]
}

// flow is where the load's writes go: clients write on writer, pgtandem
// applies them on follower. A switch turns it around.
type flow struct {
	writer, follower string
	followerDSN      string
}

// Sample is one measurement, taken every 500 ms while the load runs.
type Sample struct {
	At    time.Duration // since the load started
	Phase Phase
	// Writer is the cluster the load wrote on: old, or new between the
	// switch and the rollback.
	Writer string
	// WrittenRate is rows/s changed by the load, AppliedRate rows/s applied
	// on the other cluster (valid once apply runs, HasApplied).
	WrittenRate float64
	AppliedRate float64
	HasApplied  bool
	// Lag is now minus the source commit time of the last transaction
	// applied on the other cluster (valid when HasLag: while the load
	// writes, since without writes it only measures the time since the
	// last one).
	Lag    time.Duration
	HasLag bool
}

// monitor samples lag and throughput and keeps the live status block on
// the terminal (or a plain line every few seconds elsewhere). Its one
// goroutine is started by startMonitor and ended by stop.
type monitor struct {
	out io.Writer
	// status draws the block on a terminal; nil elsewhere.
	status  *statusBlock
	load    *writeLoad
	started time.Time

	// mu guards what the status block's decorators read on mpb's
	// goroutines; it is never held while calling mpb.
	mu        sync.Mutex
	phase     Phase
	flow      flow
	copyLine  string
	samples   []Sample
	lastPlain time.Time

	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func startMonitor(out io.Writer, load *writeLoad, f flow) *monitor {
	var status *statusBlock
	if logging.CanRedraw(out) {
		status = newStatusBlock(out)
	}
	return runMonitor(out, status, load, f)
}

func runMonitor(out io.Writer, status *statusBlock, load *writeLoad, f flow) *monitor {
	m := &monitor{out: out, status: status, load: load, started: time.Now(), flow: f,
		quit: make(chan struct{}), done: make(chan struct{})}
	if status != nil {
		status.text = m.lineText
	}
	go m.run()
	return m
}

func (m *monitor) run() {
	defer close(m.done)
	var conn *pgx.Conn
	var connDSN string
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(sampleInterval)
	defer tick.Stop()
	var lastWritten, lastApplied int64 = 0, -1
	last := time.Now()
	for {
		select {
		case <-m.quit:
			return
		case <-tick.C:
		}
		now := time.Now()
		secs := now.Sub(last).Seconds()
		last = now
		_, written := m.load.committed()
		phase, f := m.current()
		s := Sample{At: now.Sub(m.started), Phase: phase, Writer: f.writer, WrittenRate: float64(written-lastWritten) / secs}
		lastWritten = written
		if s.Phase != PhaseCopy {
			if conn != nil && connDSN != f.followerDSN {
				conn.Close(context.Background())
				conn = nil
			}
			if conn == nil {
				conn, connDSN = m.connect(f.followerDSN), f.followerDSN
			}
			if conn != nil {
				appliedTxn, lag, err := readApplied(conn, f.writer, now)
				applied := m.load.rowsThroughTxn(appliedTxn)
				switch {
				case err != nil:
					conn.Close(context.Background())
					conn = nil
				case lastApplied >= 0:
					s.AppliedRate, s.HasApplied = float64(applied-lastApplied)/secs, true
					fallthrough
				default:
					lastApplied = applied
					// Right after the load resumes, the last transaction
					// applied is from before its pause: new writes are at
					// most as old as the resume.
					s.Lag, s.HasLag = min(lag, now.Sub(m.load.started())), lag >= 0 && s.Phase != PhaseDrain
				}
			}
		}
		m.record(s)
	}
}

func (m *monitor) connect(dsn string) *pgx.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil
	}
	return conn
}

// readApplied returns the highest load transaction on conn's cluster and
// the lag of its apply from source (negative when nothing was applied yet).
func readApplied(conn *pgx.Conn, source string, now time.Time) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var applied int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(txn), 0) FROM load_ticks`).Scan(&applied); err != nil {
		return 0, 0, err
	}
	progress, err := catalog.ReadProgress(ctx, conn)
	if err != nil {
		return 0, 0, err
	}
	for _, p := range progress {
		if p.Source == source && p.CommitTime.Unix() > 0 {
			return applied, max(now.Sub(p.CommitTime), 0), nil
		}
	}
	return applied, -1, nil
}

func (m *monitor) current() (Phase, flow) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase, m.flow
}

// setFlow tells where the load writes after a switch.
func (m *monitor) setFlow(f flow) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flow = f
}

func (m *monitor) setPhase(p Phase) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase = p
}

// copyProgress is bootstrap's progress callback.
func (m *monitor) copyProgress(p bootstrap.CopyProgress) {
	m.setCopyLine(fmt.Sprintf("copy    %6.1f of ~%.1f MB", float64(p.Bytes)/1e6, float64(p.TotalBytes)/1e6))
}

func (m *monitor) setCopyLine(s string) {
	m.mu.Lock()
	m.copyLine = s
	m.mu.Unlock()
	m.showLines()
}

// lastLag returns the latest lag measured, false before the first.
func (m *monitor) lastLag() (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := len(m.samples); n > 0 && m.samples[n-1].HasLag {
		return m.samples[n-1].Lag, true
	}
	return 0, false
}

func (m *monitor) record(s Sample) {
	m.mu.Lock()
	m.samples = append(m.samples, s)
	if m.status == nil && time.Since(m.lastPlain) >= 5*time.Second {
		m.lastPlain = time.Now()
		var lines []string
		for _, l := range m.block() {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		fmt.Fprintln(m.out, strings.Join(lines, " | "))
	}
	m.mu.Unlock()
	m.showLines()
}

// step prints a finished step above the status block.
func (m *monitor) step(format string, args ...any) {
	line := fmt.Sprintf("  %-7s "+format+"\n", append([]any{fmtDuration(time.Since(m.started))}, args...)...)
	if m.status != nil {
		m.status.print(line)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprint(m.out, line)
}

// statusLine is a line of the status block, in the order they are shown.
type statusLine int

const (
	linePhase statusLine = iota
	lineCopy
	lineWriter   // the cluster clients write on
	lineFollower // the one pgtandem applies their writes on
	statusLines  // how many there are
)

// lines returns the status, phase, copy and the latest sample, a line ""
// when it has nothing to say. m.mu must be held.
func (m *monitor) lines() [statusLines]string {
	var lines [statusLines]string
	lines[linePhase] = fmt.Sprintf("phase   %s (%s)", m.phase, fmtDuration(time.Since(m.started)))
	lines[lineCopy] = m.copyLine
	if n := len(m.samples); n > 0 {
		s := m.samples[n-1]
		txns, rows := m.load.committed()
		lines[lineWriter] = fmt.Sprintf("%-7s %6.0f rows/s written, %d transactions, %d rows", s.Writer, s.WrittenRate, txns, rows)
		if failed := m.load.failures(); failed > 0 {
			lines[lineWriter] += fmt.Sprintf(", %d FAILED", failed)
		}
		if s.HasApplied || s.HasLag {
			lag := "-"
			if s.HasLag {
				lag = fmtDuration(s.Lag)
			}
			lines[lineFollower] = fmt.Sprintf("%-7s %6.0f rows/s applied, lag %s", m.flow.follower, s.AppliedRate, lag)
		}
	}
	return lines
}

// block is the status lines that have something to say. m.mu must be held.
func (m *monitor) block() []string {
	lines := m.lines()
	return slices.DeleteFunc(lines[:], func(l string) bool { return l == "" })
}

// lineText is one line of the status, for the status block's decorators.
func (m *monitor) lineText(l statusLine) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lines()[l]
}

// showLines makes the status block show the lines that have something to
// say, and only those.
func (m *monitor) showLines() {
	if m.status == nil {
		return
	}
	m.mu.Lock()
	lines := m.lines()
	m.mu.Unlock()
	var shown [statusLines]bool
	for l, text := range lines {
		shown[l] = text != ""
	}
	m.status.show(shown)
}

// stop ends sampling, removes the status block and returns the samples.
func (m *monitor) stop() []Sample {
	m.stopOnce.Do(func() {
		close(m.quit)
		<-m.done
		if m.status != nil {
			m.status.stop()
		}
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.samples
}

// statusBlock is the monitor's status at the bottom of a terminal: one
// line each, drawn by mpb as a bar without bar and redrawn in place, with
// the finished steps printed above.
type statusBlock struct {
	p   *mpb.Progress
	out io.Writer
	// text returns a line's current text; the decorators call it on mpb's
	// goroutines.
	text func(statusLine) string

	// mu orders show and stop; the decorators never take it.
	mu   sync.Mutex
	bars [statusLines]*mpb.Bar
}

func newStatusBlock(out io.Writer, opts ...mpb.ContainerOption) *statusBlock {
	opts = append([]mpb.ContainerOption{mpb.WithOutput(out), mpb.WithRefreshRate(200 * time.Millisecond)}, opts...)
	return &statusBlock{p: mpb.New(opts...), out: out}
}

// show adds the lines that are to be shown and are not yet, and removes
// those that are no longer to be.
func (b *statusBlock) show(shown [statusLines]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for l := range statusLines {
		switch bar := b.bars[l]; {
		case shown[l] && bar == nil:
			var last string
			line := decor.Any(func(decor.Statistics) string {
				// A line that lost its text shows the one it had for the
				// moment mpb takes to drop it, rather than a blank.
				if text := b.text(l); text != "" {
					last = text
				}
				return "\x1b[36m" + last + "\x1b[0m"
			})
			// Fails only once the block is stopped, when nothing is shown.
			b.bars[l], _ = b.p.Add(0, mpb.NopStyle().Build(), mpb.BarPriority(int(l)), mpb.PrependDecorators(line))
		case !shown[l] && bar != nil:
			bar.Abort(true)
			b.bars[l] = nil
		}
	}
}

// print writes a line above the block, or straight out once it is gone.
func (b *statusBlock) print(line string) {
	if _, err := b.p.Write([]byte(line)); errors.Is(err, mpb.ErrDone) {
		fmt.Fprint(b.out, line)
	}
}

// stop removes the block from the terminal.
func (b *statusBlock) stop() {
	b.mu.Lock()
	for l, bar := range b.bars {
		if bar != nil {
			bar.Abort(true)
			b.bars[l] = nil
		}
	}
	b.mu.Unlock()
	b.p.Wait()
}

func fmtDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(10 * time.Millisecond).String()
	}
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
