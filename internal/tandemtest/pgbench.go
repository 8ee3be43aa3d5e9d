package tandemtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgtandem/pgtandem/internal/pglocal"
)

// Pgbench is a pgbench run at a fixed rate with PgbenchScript, each
// transaction logged.
type Pgbench struct {
	cmd    *exec.Cmd
	dir    string
	out    bytes.Buffer
	done   chan error
	result *PgbenchResult
}

// Txn is one logged client transaction.
type Txn struct {
	// Start is when it was scheduled to start (with --rate, the client's
	// latency counts from there); End when it completed.
	Start, End time.Time
	Failed     bool
}

// Latency is what the client waited: End - Start.
func (x Txn) Latency() time.Duration { return x.End.Sub(x.Start) }

// PgbenchResult is what a pgbench run did.
type PgbenchResult struct {
	// ExitCode is 0 when every client ran to the end, 2 when one aborted
	// (any error outside a retried serialization failure).
	ExitCode  int
	Output    string
	Processed int
	Failed    int
	Txns      []Txn
}

// MaxLatency is the longest latency of the transactions that ran at some
// moment between from and to, and when that transaction started.
func (r *PgbenchResult) MaxLatency(from, to time.Time) (time.Duration, time.Time) {
	var longest time.Duration
	var at time.Time
	for _, x := range r.Txns {
		if x.End.Before(from) || x.Start.After(to) {
			continue
		}
		if x.Latency() > longest {
			longest, at = x.Latency(), x.Start
		}
	}
	return longest, at
}

// StartPgbench runs pgbench (of PostgreSQL 15, the oldest client used
// here) against dsn for duration at rate transactions per second over
// clients connections, with PgbenchScript and the simple protocol (what
// PgBouncer 1.18 in transaction pooling serves).
func StartPgbench(t testing.TB, dsn string, rate, clients int, duration time.Duration) *Pgbench {
	t.Helper()
	bin, err := pglocal.FindBinaries(15)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "switch.sql")
	if err := os.WriteFile(script, []byte(PgbenchScript), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &Pgbench{dir: dir, done: make(chan error, 1)}
	p.cmd = exec.Command(bin.Path("pgbench"), "-n", "-M", "simple", "-f", script,
		"-c", strconv.Itoa(clients), "-j", "1", "-R", strconv.Itoa(rate), "-T", strconv.Itoa(int(duration.Seconds())),
		"-l", "--log-prefix", filepath.Join(dir, "txn"), dsn)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start pgbench: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.result == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

var (
	processedRE = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	failedRE    = regexp.MustCompile(`number of failed transactions: (\d+)`)
)

// Wait waits until pgbench ends and reads its summary and log.
func (p *Pgbench) Wait(t testing.TB) *PgbenchResult {
	t.Helper()
	err := <-p.done
	r := &PgbenchResult{Output: p.out.String()}
	if exit, ok := err.(*exec.ExitError); ok {
		r.ExitCode = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	if m := processedRE.FindStringSubmatch(r.Output); m != nil {
		r.Processed, _ = strconv.Atoi(m[1])
	}
	if m := failedRE.FindStringSubmatch(r.Output); m != nil {
		r.Failed, _ = strconv.Atoi(m[1])
	}
	logs, _ := filepath.Glob(filepath.Join(p.dir, "txn.*"))
	for _, path := range logs {
		txns, err := readTxnLog(path)
		if err != nil {
			t.Fatal(err)
		}
		r.Txns = append(r.Txns, txns...)
	}
	p.result = r
	return r
}

// readTxnLog reads pgbench's per-transaction log: client_id
// transaction_no time script_no time_epoch time_us schedule_lag, time and
// schedule_lag in microseconds, time "failed" or "skipped" for a
// transaction that did not complete. With --rate, time counts from the
// scheduled start: it already holds schedule_lag (pgbench computes both
// from txn_scheduled), so the scheduled start is the end minus time alone.
func readTxnLog(path string) ([]Txn, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Txn
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			return nil, fmt.Errorf("%s: unexpected line %q", path, sc.Text())
		}
		sec, err1 := strconv.ParseInt(fields[4], 10, 64)
		usec, err2 := strconv.ParseInt(fields[5], 10, 64)
		lag, err3 := strconv.ParseInt(fields[6], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%s: unexpected line %q", path, sc.Text())
		}
		end := time.Unix(sec, usec*1000)
		x := Txn{End: end}
		if took, err := strconv.ParseInt(fields[2], 10, 64); err == nil {
			if took < lag {
				return nil, fmt.Errorf("%s: time %d µs shorter than its schedule lag %d µs: does this pgbench count time from the actual start? %q", path, took, lag, sc.Text())
			}
			x.Start = end.Add(-time.Duration(took) * time.Microsecond)
		} else {
			x.Start, x.Failed = end, true
		}
		out = append(out, x)
	}
	return out, sc.Err()
}
