package devbroker_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	plog "github.com/apache/pulsar-client-go/pulsar/log"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/devbroker/store"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// childEnv switches the test binary into running a broker, so that a test
// can kill -9 a real broker process.
const (
	childEnv       = "PGTANDEM_BROKER_TEST_CHILD_DATA_DIR"
	childListenEnv = "PGTANDEM_BROKER_TEST_CHILD_LISTEN"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChildBroker(dir, os.Getenv(childListenEnv)))
	}
	os.Exit(m.Run())
}

func runChildBroker(dir, listen string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg := devbroker.DefaultConfig()
	cfg.Listen = listen
	cfg.DataDir = dir
	s, err := devbroker.New(cfg, brokertest.Logger())
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child broker:", err)
		return 1
	}
	fmt.Printf("LISTENING %s\n", s.Addr())
	<-ctx.Done()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "child broker:", err)
		return 1
	}
	return 0
}

// startChildBroker runs a broker on dir listening on listen in a child
// process and returns its address and the process.
func startChildBroker(t *testing.T, dir, listen string) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childListenEnv+"="+listen)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child broker did not start: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTENING ")
	if !ok {
		t.Fatalf("child broker said %q", line)
	}
	return addr, cmd
}

func TestDedupOfResentSequenceIDs(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	opts := pulsar.ProducerOptions{Topic: "dedup", Name: "pg2broker-1", DisableBatching: true}
	send := func(p pulsar.Producer, seqs ...int64) {
		t.Helper()
		for _, seq := range seqs {
			if _, err := p.Send(context.Background(), &pulsar.ProducerMessage{Payload: []byte(fmt.Sprintf("seq-%d", seq)), SequenceID: &seq}); err != nil {
				t.Fatalf("send seq %d: %v", seq, err)
			}
		}
	}
	first, err := c.CreateProducer(opts)
	if err != nil {
		t.Fatal(err)
	}
	send(first, 0, 1, 2, 3, 4)
	first.Close()

	// A producer of the same name resends 3 and 4, then sends a message
	// without an explicit sequence id: the client numbers it from the last
	// sequence id the broker reported, 4.
	sendAuto := func(p pulsar.Producer, want int64) {
		t.Helper()
		if _, err := p.Send(context.Background(), &pulsar.ProducerMessage{Payload: []byte(fmt.Sprintf("seq-%d", want))}); err != nil {
			t.Fatal(err)
		}
		if got := p.LastSequenceID(); got != want {
			t.Fatalf("message got sequence id %d, want %d", got, want)
		}
	}
	second, err := c.CreateProducer(opts)
	if err != nil {
		t.Fatal(err)
	}
	send(second, 3, 4)
	sendAuto(second, 5)
	second.Close()

	b.Restart()
	third := newProducer(t, c, opts)
	send(third, 5)
	sendAuto(third, 6)

	r, err := c.CreateReader(pulsar.ReaderOptions{Topic: "dedup", StartMessageID: pulsar.EarliestMessageID()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for r.HasNext() {
		m, err := r.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.Payload()))
	}
	equalStrings(t, got, []string{"seq-0", "seq-1", "seq-2", "seq-3", "seq-4", "seq-5", "seq-6"})
}

func TestRestartKeepsDataAndCursors(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "restart", DisableBatching: true})
	cons, err := c.Subscribe(pulsar.ConsumerOptions{Topic: "restart", SubscriptionName: "s", AckWithResponse: true})
	if err != nil {
		t.Fatal(err)
	}
	sendN(t, p, 0, 10)
	receiveN(t, cons, 4, true)
	cons.Close()

	b.Restart()
	// The producer created before the restart reconnects by itself; the
	// send waits for that, as pulsar-client-go v0.19.0 races a reconnect
	// against a send issued meanwhile (seen under -race).
	a := newAdmin(t, b, "")
	topic, err := utils.GetTopicName("persistent://public/default/restart")
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the producer to reconnect", func() error { return onePublisher(a, topic) })
	sendN(t, p, 10, 2)
	again := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "restart", SubscriptionName: "s"})
	equalStrings(t, receiveN(t, again, 8, true), payloads(4, 8))
	fresh := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "restart", SubscriptionName: "from-start", SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	equalStrings(t, receiveN(t, fresh, 12, true), payloads(0, 12))
}

func TestTornRecordAtLogEndIsCutOff(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "torn", DisableBatching: true})
	sendN(t, p, 0, 5)
	p.Close()
	b.Stop()

	segs, err := filepath.Glob(filepath.Join(b.DataDir(), "persistent", "public", "default", "torn", "*.log"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments: %v, %v", segs, err)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A record header promising 4 KiB followed by only a few bytes: what a
	// crash in the middle of a write leaves behind.
	if _, err := f.Write([]byte{0, 0, 16, 0, 1, 2, 3, 4, 5, 6, 7}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b2 := brokertest.Start(t, brokertest.WithDataDir(b.DataDir()))
	c2 := newClient(t, b2.URL())
	p2 := newProducer(t, c2, pulsar.ProducerOptions{Topic: "torn", DisableBatching: true})
	sendN(t, p2, 5, 1)
	cons := newConsumer(t, c2, pulsar.ConsumerOptions{Topic: "torn", SubscriptionName: "s", SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	equalStrings(t, receiveN(t, cons, 6, true), payloads(0, 6))
}

// TestKill9LosesNoAcknowledgedMessage kills a broker process with SIGKILL
// while producers send and a consumer acknowledges, restarts it on the same
// data and port, lets the clients reconnect by themselves, and checks that
// every acknowledged send is there exactly once and no acknowledged message
// comes back.
func TestKill9LosesNoAcknowledgedMessage(t *testing.T) {
	dir := t.TempDir()
	addr, child := startChildBroker(t, dir, "127.0.0.1:0")
	c, err := pulsar.NewClient(pulsar.ClientOptions{URL: "pulsar://" + addr, OperationTimeout: 5 * time.Second, Logger: plog.DefaultNopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := c.Subscribe(pulsar.ConsumerOptions{Topic: "kill", SubscriptionName: "s", AckWithResponse: true, SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	sent := map[string]bool{}
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := range 4 {
		p, err := c.CreateProducer(pulsar.ProducerOptions{Topic: "kill", BatchingMaxPublishDelay: time.Millisecond, SendTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				payload := fmt.Sprintf("p%d-%d", k, i)
				p.SendAsync(context.Background(), &pulsar.ProducerMessage{Payload: []byte(payload)}, func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
					if err == nil {
						mu.Lock()
						sent[payload] = true
						mu.Unlock()
					}
				})
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			m, err := cons.Receive(ctx)
			cancel()
			if err != nil {
				select {
				case <-stop:
					return
				default:
					continue
				}
			}
			if cons.Ack(m) == nil {
				mu.Lock()
				acked[string(m.Payload())] = true
				mu.Unlock()
			}
		}
	}()
	testwait.For(t, 30*time.Second, "20000 acknowledged sends and 1000 acknowledged receipts", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(sent) < 20000 || len(acked) < 1000 {
			return fmt.Errorf("%d sends and %d receipts acknowledged", len(sent), len(acked))
		}
		return nil
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	close(stop)
	// The clients were cut off mid-stream; they reconnect to the restarted
	// broker and finish or fail what they had in flight.
	startChildBroker(t, dir, addr)
	wg.Wait()
	c.Close()

	mu.Lock()
	defer mu.Unlock()
	c2 := newClient(t, "pulsar://"+addr)
	// Every acknowledged send survived.
	r, err := c2.CreateReader(pulsar.ReaderOptions{Topic: "kill", StartMessageID: pulsar.EarliestMessageID()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stored := map[string]bool{}
	for r.HasNext() {
		m, err := r.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if stored[string(m.Payload())] {
			t.Fatalf("message %q is stored twice", m.Payload())
		}
		stored[string(m.Payload())] = true
	}
	lost := 0
	for p := range sent {
		if !stored[p] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged sends are gone after kill -9 (%d stored)", lost, len(sent), len(stored))
	}
	// No acknowledged message is delivered again to the durable subscription.
	cons2 := newConsumer(t, c2, pulsar.ConsumerOptions{Topic: "kill", SubscriptionName: "s", ReceiverQueueSize: 1000})
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		m, err := cons2.Receive(ctx)
		cancel()
		if err != nil {
			break
		}
		if acked[string(m.Payload())] {
			t.Fatalf("acknowledged message %q was delivered again after kill -9", m.Payload())
		}
		cons2.Ack(m)
	}
	t.Logf("%d sends acknowledged, %d stored, %d receipts acknowledged across the kill -9", len(sent), len(stored), len(acked))
}

// TestAckWithoutResponseIsSavedBySaver checks that acknowledgments that ask
// for no response, which the broker does not save one by one, still reach
// the cursor file without a restart, and that a graceful stop saves the
// last of them.
func TestAckWithoutResponseIsSavedBySaver(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "lazy", DisableBatching: true})
	cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "lazy", SubscriptionName: "s"})
	sendN(t, p, 0, 10)
	var last pulsar.MessageID
	for range 4 {
		m := receive(t, cons, 20*time.Second)
		if err := cons.Ack(m); err != nil {
			t.Fatal(err)
		}
		last = m.ID()
	}
	cursors, err := store.NewCursorStore(filepath.Join(b.DataDir(), "persistent", "public", "default", "lazy", "subscriptions"))
	if err != nil {
		t.Fatal(err)
	}
	want := store.Position{Ledger: last.LedgerID(), Entry: last.EntryID()}
	testwait.For(t, 10*time.Second, "the cursor file at the last ack", func() error {
		st, err := cursors.Load("s")
		if err != nil {
			return err
		}
		if st.MarkDelete != want {
			return fmt.Errorf("cursor file at %v, want %v", st.MarkDelete, want)
		}
		return nil
	})

	// One more ack, then a graceful restart at once: the stop saves it.
	m := receive(t, cons, 20*time.Second)
	if err := cons.Ack(m); err != nil {
		t.Fatal(err)
	}
	cons.Close() // flushes the ack to the broker
	b.Restart()
	again := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "lazy", SubscriptionName: "s"})
	equalStrings(t, receiveN(t, again, 5, true), payloads(5, 5))
}
