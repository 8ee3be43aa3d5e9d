package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/cursor"
	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/tandemtest"
	"github.com/pgtandem/pgtandem/internal/testwait"
	switchover "github.com/pgtandem/pgtandem/switch"
)

// The load of TestCursorAcrossSwitchAndRollback: curRate client
// transactions a second for curDuration, curPhaseRows of them on old, then
// as many on new, then the rest on old again.
const (
	curRate      = 100
	curClients   = 4
	curDuration  = 30 * time.Second
	curPhaseRows = 600
)

// lateStartEnv delays the first use of the late subscription, counted from
// the end of the first switch (e.g. 10m); by default it starts once the
// load is over.
const lateStartEnv = "PGTANDEM_TEST_LATE_START"

// cursorBroker keeps a topic's data only while a durable subscription has
// not acknowledged it: small segments, deleted a second after that.
func cursorBroker() []brokertest.Option {
	return []brokertest.Option{brokertest.WithConfig(func(c *devbroker.Config) {
		c.SegmentSize = 64 << 10
		c.RetentionTime = time.Second
		c.RetentionInterval = 200 * time.Millisecond
	})}
}

// TestCursorAcrossSwitchAndRollback is the acceptance of the cursor: the
// example consumer (examples/auditsink) reads the change stream through a
// switch and a rollback under pgbench, killed with SIGKILL every second or
// so and right at each hop, and a second subscription, prepared at the
// switch by switch.cursor-prepare, is first used after both. Each sees every
// client transaction once, old's before the switch, then new's, then old's
// after the rollback, each cluster's in commit order, though the broker
// deletes whatever no subscription holds.
func TestCursorAcrossSwitchAndRollback(t *testing.T) {
	td := tandemtest.Start(t, 15, 17, tandemtest.Options{Broker: cursorBroker()})
	config := td.ConfigFile(t, t.TempDir())
	ctx := context.Background()
	if _, err := pgtest.Connect(t, td.Old, tandemtest.Database).Exec(ctx, `CREATE DATABASE audit`); err != nil {
		t.Fatal(err)
	}
	auditDSN := td.Old.DSN("audit")
	// The late subscription exists on old's topic from the start, as a
	// downstream consumer's would, and holds it.
	curCreateSubscription(t, td, td.OldTopic, "late")

	sink := &curSink{td: td, auditDSN: auditDSN, sub: "sink"}
	kills := sink.underKills(t)
	testwait.For(t, time.Minute, "the sink's subscription on old's topic", func() error {
		return curHasSubscription(td, td.OldTopic, "sink")
	})

	bench := tandemtest.StartPgbench(t, td.Bouncer.DSN(tandemtest.Database), curRate, curClients, curDuration)
	old, nw := swWatch(t, td.Old), swWatch(t, td.New)
	swWaitRows(t, old, 0, curPhaseRows)
	forward := swRunSwitch(t, config, "old", "new", "--set", "switch.cursor-prepare=true")
	if forward.Cut == nil || len(forward.Prepared) != 2 {
		t.Fatalf("switch old -> new: cut %+v, prepared %+v; want the cut and sink and late prepared", forward.Cut, forward.Prepared)
	}
	curCheckPrepare(t, config, forward)
	onNew, err := nw.count("ev_big")
	if err != nil {
		t.Fatal(err)
	}
	swWaitRows(t, nw, onNew, curPhaseRows)
	rollback := swRunSwitch(t, config, "new", "old", "--set", "switch.cursor-prepare=true")
	res := bench.Wait(t)
	if res.ExitCode != 0 || res.Failed != 0 {
		t.Fatalf("pgbench: exit code %d, %d failed\n%s", res.ExitCode, res.Failed, res.Output)
	}
	n := int64(res.Processed)
	testwait.For(t, 2*time.Minute, "the sink killed right at both hops", func() error {
		if got := kills.killedAt(); !slices.Contains(got, forward.SwitchID) || !slices.Contains(got, rollback.SwitchID) {
			kills.mu.Lock()
			defer kills.mu.Unlock()
			return fmt.Errorf("killed at the hops of %v, %d other kills; the last run killed logged:\n%s", got, kills.kills.Load(), kills.lastRun)
		}
		return nil
	})
	kills.stop()
	t.Logf("sink killed %d times at random and right at the hops of switches %v", kills.kills.Load(), kills.killedAt())

	// Three changes per client transaction: the account, ev_big, ev_ident.
	sink.runUntil(t, 3*n)
	if delay := os.Getenv(lateStartEnv); delay != "" {
		d, err := time.ParseDuration(delay)
		if err != nil {
			t.Fatalf("%s: %v", lateStartEnv, err)
		}
		if wait := time.Until(forward.PauseEnd.Add(d)); wait > 0 {
			t.Logf("the late subscription is first used %s after the switch (%s)", d, lateStartEnv)
			time.Sleep(wait) // the scenario itself: a consumer that moves late
		}
	}
	late := &curSink{td: td, auditDSN: auditDSN, sub: "late"}
	late.runUntil(t, 3*n)
	t.Logf("late subscription first used %s after the switch", time.Since(forward.PauseEnd).Round(time.Second))

	audit := pgtest.Connect(t, td.Old, "audit")
	for _, sub := range []string{"sink", "late"} {
		curCheckStream(t, audit, sub, n, forward, rollback)
	}
	curCheckStatus(t, config, rollback, "late", "sink")
}

// curSink runs examples/auditsink for one subscription.
type curSink struct {
	td       *tandemtest.Tandem
	auditDSN string
	sub      string
}

// command is one run of the sink; with killAtHop it kills itself at any
// hop but those of the switches spared.
func (s *curSink) command(killAtHop bool, spare []string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.Command(auditsinkBin, "--pulsar-url", s.td.Broker.URL(), "--topic", "old="+s.td.OldTopic, "--topic", "new="+s.td.NewTopic,
		"--start", "old", "--subscription", s.sub, "--audit-dsn", s.auditDSN)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "AUDITSINK_KILL_AT_HOP=0", "AUDITSINK_SPARE_HOPS="+strings.Join(spare, ","))
	if killAtHop {
		cmd.Env[len(cmd.Env)-2] = "AUDITSINK_KILL_AT_HOP=1"
	}
	return cmd, &stderr
}

// runUntil runs the sink until its subscription holds want changes in the
// audit database, then stops it with SIGTERM.
func (s *curSink) runUntil(t *testing.T, want int64) {
	t.Helper()
	cmd, stderr := s.command(false, nil)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	audit := pgtest.Connect(t, s.td.Old, "audit")
	testwait.For(t, 3*time.Minute, fmt.Sprintf("%d changes audited for %s", want, s.sub), func() error {
		select {
		case err := <-exited:
			t.Fatalf("auditsink %s exited: %v\n%s", s.sub, err, stderr)
		default:
		}
		var got int64
		if err := audit.QueryRow(context.Background(), `SELECT count(*) FROM audit_change WHERE subscription = $1`, s.sub).Scan(&got); err != nil {
			return err
		}
		if got < want {
			return fmt.Errorf("%d audited", got)
		}
		return nil
	})
	// A sink that had nothing left to do may get the signal before it
	// handles it: ended by SIGTERM is as good as a clean exit.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	var ee *exec.ExitError
	if err := <-exited; err != nil && !(errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM) {
		t.Fatalf("auditsink %s after SIGTERM: %v\n%s", s.sub, err, stderr)
	}
}

// curKills restarts the sink for ever and kills it with SIGKILL after a
// random 0.3 to 1.5 s; every run also kills itself right at the first hop
// of a switch no run was killed at yet (AUDITSINK_KILL_AT_HOP, the others
// in AUDITSINK_SPARE_HOPS), so that each hop is both killed at and, on the
// next run, passed.
type curKills struct {
	sink     *curSink
	kills    atomic.Int64
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	hopKills []string // switch ids
	failure  string
	// lastRun is the standard error of the last run killed.
	lastRun string
}

func (s *curSink) underKills(t *testing.T) *curKills {
	ctx, cancel := context.WithCancel(context.Background())
	k := &curKills{sink: s, cancel: cancel, done: make(chan struct{})}
	go k.loop(ctx)
	t.Cleanup(func() {
		k.stop()
		if k.failure != "" {
			t.Error(k.failure)
		}
	})
	return k
}

func (k *curKills) killedAt() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.hopKills)
}

// hopSwitch is the switch id in the sink's log line at a hop.
var hopSwitch = regexp.MustCompile(`hop at a switch" switch=(\S+)`)

func (k *curKills) stop() {
	k.cancel()
	<-k.done
}

func (k *curKills) loop(ctx context.Context) {
	defer close(k.done)
	for ctx.Err() == nil {
		cmd, stderr := k.sink.command(true, k.killedAt())
		if err := cmd.Start(); err != nil {
			k.fail(fmt.Sprintf("start auditsink: %v", err))
			return
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			var ee *exec.ExitError
			// The last hop the run logged is the one it was killed at.
			if m := hopSwitch.FindAllStringSubmatch(stderr.String(), -1); m != nil && errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
				k.mu.Lock()
				k.hopKills = append(k.hopKills, m[len(m)-1][1])
				k.mu.Unlock()
				continue
			}
			k.fail(fmt.Sprintf("auditsink exited by itself: %v\n%s", err, stderr))
			return
		case <-time.After(300*time.Millisecond + rand.N(1200*time.Millisecond)):
		case <-ctx.Done():
		}
		_ = cmd.Process.Kill()
		<-exited
		k.kills.Add(1)
		k.mu.Lock()
		k.lastRun = stderr.String()
		k.mu.Unlock()
	}
}

func (k *curKills) fail(msg string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failure = msg
}

// curCheckStream checks what a subscription saw: every client transaction
// once (ev_big ids 1 to n, each once, and nothing else twice), in three
// runs, old's, new's, old's, split where the switches cut the stream, each
// run in commit order.
func curCheckStream(t *testing.T, audit *pgx.Conn, sub string, n int64, forward, rollback switchover.Report) {
	t.Helper()
	ctx := context.Background()
	var total int64
	if err := audit.QueryRow(ctx, `SELECT count(*) FROM audit_change WHERE subscription = $1`, sub).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != 3*n {
		t.Fatalf("%s: %d changes audited, want %d (3 per client transaction, each once)", sub, total, 3*n)
	}
	rows, err := audit.Query(ctx, `SELECT cluster, commit_lsn::text, (new_row->>'id')::bigint FROM audit_change
		WHERE subscription = $1 AND table_name = '"public"."ev_big"' AND kind = 'insert' ORDER BY id`, sub)
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		cluster  string
		min, max int64
		rows     int
	}
	var runs []*run
	seen := map[int64]bool{}
	var lastLSN pglogrepl.LSN
	var cluster, lsnText string
	var id int64
	_, err = pgx.ForEachRow(rows, []any{&cluster, &lsnText, &id}, func() error {
		lsn, err := pglogrepl.ParseLSN(lsnText)
		if err != nil {
			return err
		}
		if len(runs) == 0 || runs[len(runs)-1].cluster != cluster {
			runs = append(runs, &run{cluster: cluster, min: id, max: id})
			lastLSN = 0
		}
		r := runs[len(runs)-1]
		if lsn < lastLSN {
			return fmt.Errorf("ev_big id %d committed on %s at %s after a change of %s: not in commit order", id, cluster, lsn, lastLSN)
		}
		if seen[id] {
			return fmt.Errorf("ev_big id %d seen twice", id)
		}
		seen[id], lastLSN = true, lsn
		r.min, r.max, r.rows = min(r.min, id), max(r.max, id), r.rows+1
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", sub, err)
	}
	var got []string
	for _, r := range runs {
		got = append(got, fmt.Sprintf("%s: %d rows, ids %d to %d", r.cluster, r.rows, r.min, r.max))
	}
	t.Logf("%s saw %s", sub, strings.Join(got, "; "))
	if len(runs) != 3 || runs[0].cluster != "old" || runs[1].cluster != "new" || runs[2].cluster != "old" {
		t.Fatalf("%s: want old's changes, then new's, then old's; got %s", sub, strings.Join(got, "; "))
	}
	if int64(len(seen)) != n || runs[0].min != 1 || runs[2].max != n {
		t.Fatalf("%s: %d distinct ev_big ids, want 1 to %d", sub, len(seen), n)
	}
	// Every client transaction of a run committed after every one of the
	// run before: the sequences were handed over, and ids only grow.
	for i := 1; i < len(runs); i++ {
		if runs[i].min <= runs[i-1].max {
			t.Fatalf("%s: run %d (%s) starts at id %d, at or before the end of the run before it (%d)", sub, i+1, runs[i].cluster, runs[i].min, runs[i-1].max)
		}
	}
	for _, rep := range []switchover.Report{forward, rollback} {
		if rep.Cut == nil || rep.Cut.SwitchID != rep.SwitchID {
			t.Fatalf("switch %s recorded no cut: %+v", rep.SwitchID, rep.Cut)
		}
	}
}

// curCheckPrepare: pgtandem cursor prepare, run again after the switch
// prepared both subscriptions, finds them there and leaves them alone.
func curCheckPrepare(t *testing.T, config string, rep switchover.Report) {
	t.Helper()
	out, err := exec.Command(pgtandemBin, "cursor", "prepare", "--config", config, "--switch", rep.SwitchID, "--json").Output()
	if err != nil {
		t.Fatalf("pgtandem cursor prepare: %v\n%s", err, out)
	}
	var got struct {
		Switch   cursor.Mark       `json:"switch"`
		Prepared []cursor.Prepared `json:"prepared"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("pgtandem cursor prepare --json: %v\n%s", err, out)
	}
	want := []cursor.Prepared{{Subscription: "late"}, {Subscription: "sink"}}
	if got.Switch.ToMessageID != rep.Cut.ToMessageID || fmt.Sprint(got.Prepared) != fmt.Sprint(want) {
		t.Fatalf("pgtandem cursor prepare --switch %s: %s; want the switch's cut and %v", rep.SwitchID, out, want)
	}
}

// curCheckStatus: pgtandem cursor status shows, for the latest switch,
// every subscription past the cut with nothing left before it.
func curCheckStatus(t *testing.T, config string, latest switchover.Report, subs ...string) {
	t.Helper()
	out, err := exec.Command(pgtandemBin, "cursor", "status", "--config", config, "--json").Output()
	if err != nil {
		t.Fatalf("pgtandem cursor status: %v\n%s", err, out)
	}
	var st struct {
		Switch        cursor.Mark                 `json:"switch"`
		Subscriptions []cursor.SubscriptionStatus `json:"subscriptions"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("pgtandem cursor status --json: %v\n%s", err, out)
	}
	if st.Switch.SwitchID != latest.SwitchID {
		t.Fatalf("cursor status shows switch %s, want the latest, %s", st.Switch.SwitchID, latest.SwitchID)
	}
	var names []string
	for _, s := range st.Subscriptions {
		names = append(names, s.Subscription)
		if s.BeforeCut != 0 || !s.Prepared || !s.Passed {
			t.Fatalf("cursor status: %+v; want nothing before the cut, prepared and passed\n%s", s, out)
		}
	}
	if strings.Join(names, ",") != strings.Join(subs, ",") {
		t.Fatalf("cursor status lists %v, want %v (pgtandem's own left out)\n%s", names, subs, out)
	}
}

// TestCursorCutLostAndPlain: without a subscription prepared at the cut,
// retention deletes the new topic's start, and a consumer that hops there
// late gets a *cursor.LostError naming the switch and what was lost, and
// nothing after it; `pgtandem cursor prepare` says the same. Before any
// switch the consumer is a plain one: acknowledged messages are not
// delivered again after a restart.
func TestCursorCutLostAndPlain(t *testing.T) {
	td := tandemtest.Start(t, 15, 17, tandemtest.Options{Broker: cursorBroker()})
	config := td.ConfigFile(t, t.TempDir())
	ctx := context.Background()
	for _, sub := range []string{"plain", "late"} {
		curCreateSubscription(t, td, td.OldTopic, sub)
	}
	clients := pgtest.Connect(t, td.Old, tandemtest.Database)
	curInsert(t, clients, 40)

	client, err := pulsarclient.New(pulsarclient.Options{URL: td.Broker.URL(), Log: servicetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	topics := map[string]string{"old": td.OldTopic, "new": td.NewTopic}
	plain := func() *cursor.Consumer {
		c, err := cursor.New(ctx, cursor.Config{Client: client, Topics: topics, Subscription: "plain", Start: cursor.Position{Cluster: "old"}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := plain()
	first := curReadIDs(t, c, 25, true)
	c.Close()
	// Restarted with no stored position, it goes on from what it
	// acknowledged: at least once, so from 25 at the latest (Ack leaves the
	// batch acknowledged last for a restart from its position), in order,
	// to 40.
	c = plain()
	var second []int64
	for len(second) == 0 || second[len(second)-1] < 40 {
		second = append(second, curReadIDs(t, c, 1, false)...)
	}
	c.Close()
	consecutive := true
	for i := 1; i < len(second); i++ {
		consecutive = consecutive && second[i] == second[i-1]+1
	}
	if first[0] != 1 || first[24] != 25 || second[0] > 25 || second[0] < 1 || !consecutive {
		t.Fatalf("plain consumer: ids %v, then after a restart %v; want 1 to 25, then from at most 25 to 40 in order", first, second)
	}

	rep := swRunSwitch(t, config, "old", "new")
	cut, err := cursor.ParseID(rep.Cut.ToMessageID)
	if err != nil {
		t.Fatal(err)
	}
	onNew := pgtest.Connect(t, td.New, tandemtest.Database)
	admin, newTopic, err := curAdmin(td, td.NewTopic)
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 2*time.Minute, "retention to delete the segment of new's topic that holds the cut", func() error {
		curInsert(t, onNew, 300)
		st, err := admin.Topics().GetInternalStats(*newTopic)
		if err != nil {
			return err
		}
		if len(st.Ledgers) == 0 || st.Ledgers[0].LedgerID <= cut.Ledger {
			return fmt.Errorf("oldest segment %+v, the cut is in %d", st.Ledgers, cut.Ledger)
		}
		return nil
	})

	c, err = cursor.New(ctx, cursor.Config{Client: client, Topics: topics, Subscription: "late", Start: cursor.Position{Cluster: "old"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ids := curReadIDs(t, c, 40, false)
	if ids[0] != 1 || ids[39] != 40 {
		t.Fatalf("late consumer on old: ids %v", ids)
	}
	readCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	b, err := c.Next(readCtx)
	var lost *cursor.LostError
	if !errors.As(err, &lost) || lost.Hop == nil || lost.Hop.SwitchID != rep.SwitchID || lost.Want != cut {
		t.Fatalf("after the hop into a deleted cut: batch %+v, %v; want a *cursor.LostError of switch %s at %s", b, err, rep.SwitchID, cut)
	}
	t.Logf("the consumer said: %v", err)
	if _, again := c.Next(readCtx); again != err {
		t.Fatalf("Next after the loss: %v, want the same error", again)
	}
	out, err := exec.Command(pgtandemBin, "cursor", "prepare", "--config", config, "--switch", rep.SwitchID).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is no longer in "+td.NewTopic) {
		t.Fatalf("pgtandem cursor prepare after the cut was deleted: %v\n%s", err, out)
	}
}

// curInsert commits n client transactions, each inserting a row in ev_big.
func curInsert(t *testing.T, conn *pgx.Conn, n int) {
	t.Helper()
	for range n {
		if _, err := conn.Exec(context.Background(), `INSERT INTO ev_big (aid) VALUES (1)`); err != nil {
			t.Fatal(err)
		}
	}
}

// curReadIDs reads n batches, each one ev_big insert, and returns their ids.
func curReadIDs(t *testing.T, c *cursor.Consumer, n int, ack bool) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []int64
	for len(ids) < n {
		b, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("after ids %v: %v", ids, err)
		}
		for _, ev := range b.Changes {
			if ev.Table != "ev_big" || ev.New["id"] == nil {
				t.Fatalf("unexpected change %+v", ev)
			}
			var id int64
			fmt.Sscan(*ev.New["id"], &id)
			ids = append(ids, id)
		}
		if ack {
			if err := c.Ack(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ids
}

// curAdmin is a client of the tandem's broker's admin API and topic's name
// for it.
func curAdmin(td *tandemtest.Tandem, topic string) (pulsaradmin.Client, *utils.TopicName, error) {
	admin, err := pulsarclient.NewAdmin(td.Broker.AdminURL(), "", pulsarclient.TLS{})
	if err != nil {
		return nil, nil, err
	}
	name, err := utils.GetTopicName(topic)
	return admin, name, err
}

func curCreateSubscription(t *testing.T, td *tandemtest.Tandem, topic, sub string) {
	t.Helper()
	admin, name, err := curAdmin(td, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Subscriptions().Create(*name, sub, utils.Earliest); err != nil {
		t.Fatalf("create subscription %s on %s: %v", sub, topic, err)
	}
}

func curHasSubscription(td *tandemtest.Tandem, topic, sub string) error {
	admin, name, err := curAdmin(td, topic)
	if err != nil {
		return err
	}
	subs, err := admin.Subscriptions().List(*name)
	if err != nil {
		return err
	}
	for _, s := range subs {
		if s == sub {
			return nil
		}
	}
	return fmt.Errorf("subscriptions %v", subs)
}
