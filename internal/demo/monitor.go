package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/bootstrap"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/logging"
)

// sampleInterval is how often lag and throughput are measured and the
// status block redrawn.
const sampleInterval = 500 * time.Millisecond

// Phase is the stage of the rehearsal a sample was taken in.
type Phase int

const (
	PhaseCopy    Phase = iota // init copies old into new
	PhaseCatchUp              // apply works through what was written during the copy
	PhaseSteady               // new follows old under the load
	PhaseDrain                // load paused, marker and verify
)

func (p Phase) String() string {
	return [...]string{"initial copy", "catching up", "in tandem", "load paused"}[p]
}

// Sample is one measurement, taken every 500 ms while the load runs.
type Sample struct {
	At    time.Duration // since the load started
	Phase Phase
	// WrittenRate is rows/s changed on old, AppliedRate rows/s applied on
	// new (valid once apply runs, HasApplied).
	WrittenRate float64
	AppliedRate float64
	HasApplied  bool
	// Lag is now minus the source commit time of the last transaction
	// applied on new (valid when HasLag).
	Lag    time.Duration
	HasLag bool
}

// monitor samples lag and throughput and keeps the live status block on
// the terminal (or a plain line every few seconds elsewhere). Its one
// goroutine is started by startMonitor and ended by stop.
type monitor struct {
	out       io.Writer
	terminal  bool
	load      *writeLoad
	started   time.Time
	targetDSN string

	mu         sync.Mutex
	phase      Phase
	copyLine   string
	samples    []Sample
	drawnLines int
	lastPlain  time.Time

	quit chan struct{}
	done chan struct{}
}

func startMonitor(out io.Writer, load *writeLoad, targetDSN string) *monitor {
	m := &monitor{out: out, terminal: logging.CanRedraw(out), load: load, started: time.Now(), targetDSN: targetDSN,
		quit: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	return m
}

func (m *monitor) run() {
	defer close(m.done)
	var conn *pgx.Conn
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
		s := Sample{At: now.Sub(m.started), Phase: m.currentPhase(), WrittenRate: float64(written-lastWritten) / secs}
		lastWritten = written
		if s.Phase != PhaseCopy {
			if conn == nil {
				conn = m.connect()
			}
			if conn != nil {
				appliedTxn, lag, err := readApplied(conn, now)
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
					s.Lag, s.HasLag = lag, lag >= 0
				}
			}
		}
		m.record(s)
	}
}

func (m *monitor) connect() *pgx.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.targetDSN)
	if err != nil {
		return nil
	}
	return conn
}

// readApplied returns the highest load transaction applied on new and the lag of
// the apply from old (negative when nothing was applied yet).
func readApplied(conn *pgx.Conn, now time.Time) (int64, time.Duration, error) {
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
		if p.Source == oldCluster && p.CommitTime.Unix() > 0 {
			return applied, max(now.Sub(p.CommitTime), 0), nil
		}
	}
	return applied, -1, nil
}

func (m *monitor) currentPhase() Phase {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase
}

func (m *monitor) setPhase(p Phase) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase = p
}

// copyProgress is bootstrap's progress callback.
func (m *monitor) copyProgress(p bootstrap.CopyProgress) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.copyLine = fmt.Sprintf("copy    %6.1f of ~%.1f MB", float64(p.Bytes)/1e6, float64(p.TotalBytes)/1e6)
}

func (m *monitor) setCopyLine(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.copyLine = s
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
	defer m.mu.Unlock()
	m.samples = append(m.samples, s)
	if m.terminal {
		m.redraw()
		return
	}
	if time.Since(m.lastPlain) >= 5*time.Second {
		m.lastPlain = time.Now()
		var lines []string
		for _, l := range m.block() {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		fmt.Fprintln(m.out, strings.Join(lines, " | "))
	}
}

// step prints a finished step above the status block.
func (m *monitor) step(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clear()
	fmt.Fprintf(m.out, "  %-7s "+format+"\n", append([]any{fmtDuration(time.Since(m.started))}, args...)...)
	if m.terminal {
		m.redraw()
	}
}

// block is the status: phase, copy and the latest sample.
func (m *monitor) block() []string {
	lines := []string{fmt.Sprintf("phase   %s (%s)", m.phase, fmtDuration(time.Since(m.started)))}
	if m.copyLine != "" {
		lines = append(lines, m.copyLine)
	}
	if n := len(m.samples); n > 0 {
		s := m.samples[n-1]
		txns, rows := m.load.committed()
		line := fmt.Sprintf("old     %6.0f rows/s written, %d transactions, %d rows", s.WrittenRate, txns, rows)
		lines = append(lines, line)
		if s.HasApplied || s.HasLag {
			lag := "-"
			if s.HasLag {
				lag = fmtDuration(s.Lag)
			}
			lines = append(lines, fmt.Sprintf("new     %6.0f rows/s applied, lag %s", s.AppliedRate, lag))
		}
	}
	return lines
}

// redraw replaces the block on the terminal: cursor up over the previous
// one, clear to the end of the screen, print.
func (m *monitor) redraw() {
	m.clear()
	lines := m.block()
	fmt.Fprint(m.out, "\x1b[36m"+strings.Join(lines, "\n")+"\x1b[0m\n")
	m.drawnLines = len(lines)
}

func (m *monitor) clear() {
	if m.terminal && m.drawnLines > 0 {
		fmt.Fprintf(m.out, "\x1b[%dA\x1b[J", m.drawnLines)
		m.drawnLines = 0
	}
}

// stop ends sampling, removes the status block and returns the samples.
func (m *monitor) stop() []Sample {
	select {
	case <-m.quit:
	default:
		close(m.quit)
		<-m.done
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clear()
	return m.samples
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
