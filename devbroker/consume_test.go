package devbroker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// activeListener records failover notifications.
type activeListener struct {
	mu     sync.Mutex
	active bool
	seen   bool
}

func (l *activeListener) BecameActive(pulsar.Consumer, string, int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active, l.seen = true, true
}

func (l *activeListener) BecameInactive(pulsar.Consumer, string, int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active, l.seen = false, true
}

func (l *activeListener) isActive() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}

func (l *activeListener) notified() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen
}

func TestFailoverStandbyTakesOver(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	var la, lb activeListener
	first, err := c.Subscribe(pulsar.ConsumerOptions{Topic: "failover", SubscriptionName: "s", Type: pulsar.Failover, EventListener: &la})
	if err != nil {
		t.Fatal(err)
	}
	second := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "failover", SubscriptionName: "s", Type: pulsar.Failover, EventListener: &lb})
	testwait.For(t, 10*time.Second, "first consumer active, second told it is not", func() error {
		if !la.isActive() || !lb.notified() || lb.isActive() {
			return fmt.Errorf("first active %v, second notified %v and active %v", la.isActive(), lb.notified(), lb.isActive())
		}
		return nil
	})

	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "failover"})
	sendN(t, p, 0, 10)
	// The active consumer takes five and acknowledges three, then goes away.
	got := receiveN(t, first, 3, true)
	got = append(got, receiveN(t, first, 2, false)...)
	equalStrings(t, got, payloads(0, 5))
	expectNothing(t, second, 200*time.Millisecond)
	first.Close()

	testwait.For(t, 10*time.Second, "second consumer active", func() error {
		if !lb.isActive() {
			return errors.New("not active")
		}
		return nil
	})
	equalStrings(t, receiveN(t, second, 7, true), payloads(3, 7))
}

func TestSharedSubscriptionSpreadsMessages(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	opts := pulsar.ConsumerOptions{Topic: "shared", SubscriptionName: "s", Type: pulsar.Shared, ReceiverQueueSize: 10}
	c1, c2 := newConsumer(t, c, opts), newConsumer(t, c, opts)
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "shared", DisableBatching: true})
	sendN(t, p, 0, 100)
	var mu sync.Mutex
	var got []string
	counts := map[int]int{}
	var wg sync.WaitGroup
	for i, cons := range []pulsar.Consumer{c1, c2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				m, err := cons.Receive(ctx)
				cancel()
				if err != nil {
					return
				}
				cons.Ack(m)
				mu.Lock()
				got = append(got, string(m.Payload()))
				counts[i]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(got)
	want := payloads(0, 100)
	slices.Sort(want)
	equalStrings(t, got, want)
	if counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("one shared consumer got nothing: %v", counts)
	}
}

func TestExclusiveSubscriptionRefusesSecondConsumer(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	newConsumer(t, c, pulsar.ConsumerOptions{Topic: "exclusive", SubscriptionName: "s"})
	if _, err := c.Subscribe(pulsar.ConsumerOptions{Topic: "exclusive", SubscriptionName: "s"}); err == nil {
		t.Fatal("a second exclusive consumer was attached")
	}
}

func TestUnackedMessagesRedeliveredAfterConsumerCrash(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "crash", DisableBatching: true})
	first, err := c.Subscribe(pulsar.ConsumerOptions{Topic: "crash", SubscriptionName: "s", SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	if err != nil {
		t.Fatal(err)
	}
	sendN(t, p, 0, 6)
	receiveN(t, first, 2, true)
	receiveN(t, first, 4, false)
	first.Close() // without acknowledging m-2..m-5

	second := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "crash", SubscriptionName: "s"})
	for i, want := range payloads(2, 4) {
		m := receive(t, second, 10*time.Second)
		if string(m.Payload()) != want {
			t.Fatalf("redelivered message %d is %q, want %q", i, m.Payload(), want)
		}
		if m.RedeliveryCount() == 0 {
			t.Fatalf("redelivered %q has redelivery count 0", want)
		}
		second.Ack(m)
	}
	expectNothing(t, second, 200*time.Millisecond)
}

func TestNegativeAckRedelivers(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "nack", SubscriptionName: "s", Type: pulsar.Shared, NackRedeliveryDelay: 100 * time.Millisecond})
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "nack", DisableBatching: true})
	sendN(t, p, 0, 3)
	for _, m := range []pulsar.Message{receive(t, cons, 5*time.Second), receive(t, cons, 5*time.Second), receive(t, cons, 5*time.Second)} {
		if string(m.Payload()) == "m-1" {
			cons.Nack(m)
		} else {
			cons.Ack(m)
		}
	}
	m := receive(t, cons, 10*time.Second)
	if string(m.Payload()) != "m-1" || m.RedeliveryCount() != 1 {
		t.Fatalf("got %q with redelivery count %d, want m-1 once redelivered", m.Payload(), m.RedeliveryCount())
	}
	cons.Ack(m)
	expectNothing(t, cons, 300*time.Millisecond)
}

func TestCumulativeAck(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "cumulative", DisableBatching: true})
	first, err := c.Subscribe(pulsar.ConsumerOptions{Topic: "cumulative", SubscriptionName: "s", SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	if err != nil {
		t.Fatal(err)
	}
	sendN(t, p, 0, 10)
	var last pulsar.Message
	for range 6 {
		last = receive(t, first, 5*time.Second)
	}
	if err := first.AckCumulative(last); err != nil {
		t.Fatal(err)
	}
	first.Close()
	second := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "cumulative", SubscriptionName: "s"})
	equalStrings(t, receiveN(t, second, 4, true), payloads(6, 4))
}

func TestBatchIndexAcknowledgment(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	opts := pulsar.ConsumerOptions{Topic: "batch-ack", SubscriptionName: "s", EnableBatchIndexAcknowledgment: true, AckWithResponse: true, SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest}
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "batch-ack", BatchingMaxMessages: 10, BatchingMaxPublishDelay: time.Second})
	for i := range 10 {
		p.SendAsync(context.Background(), &pulsar.ProducerMessage{Payload: []byte(payloads(i, 1)[0])}, nil)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	first, err := c.Subscribe(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		m := receive(t, first, 5*time.Second)
		if m.ID().BatchSize() != 10 {
			t.Fatalf("message %d is in a batch of %d, want 10", i, m.ID().BatchSize())
		}
		if i%2 == 0 {
			if err := first.Ack(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	first.Close()
	second := newConsumer(t, c, opts)
	equalStrings(t, receiveN(t, second, 5, true), []string{"m-1", "m-3", "m-5", "m-7", "m-9"})
}

func TestSeekByMessageIDAndTime(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "seek", DisableBatching: true})
	cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "seek", SubscriptionName: "s", SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	ids := sendN(t, p, 0, 5)
	// Publish times have millisecond resolution: start the second half
	// strictly after the first.
	middle := time.Now().Add(time.Millisecond)
	testwait.For(t, time.Second, "the clock to pass the middle", func() error {
		if !time.Now().After(middle) {
			return errors.New("not yet")
		}
		return nil
	})
	sendN(t, p, 5, 5)
	equalStrings(t, receiveN(t, cons, 10, true), payloads(0, 10))

	if err := cons.Seek(ids[2]); err != nil {
		t.Fatalf("seek to %v: %v", ids[2], err)
	}
	// As on Pulsar, the broker rewinds to the given message and the client
	// skips that message itself: a consumer resumes after it.
	equalStrings(t, receiveN(t, cons, 7, true), payloads(3, 7))

	if err := cons.SeekByTime(middle); err != nil {
		t.Fatalf("seek to %v: %v", middle, err)
	}
	equalStrings(t, receiveN(t, cons, 5, true), payloads(5, 5))
	expectNothing(t, cons, 200*time.Millisecond)
}

func TestReaders(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "readers", DisableBatching: true})
	ids := sendN(t, p, 0, 5)

	read := func(r pulsar.Reader) []string {
		t.Helper()
		var out []string
		for r.HasNext() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			m, err := r.Next(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(m.Payload()))
		}
		return out
	}
	newReader := func(opts pulsar.ReaderOptions) pulsar.Reader {
		t.Helper()
		opts.Topic = "readers"
		r, err := c.CreateReader(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}

	equalStrings(t, read(newReader(pulsar.ReaderOptions{StartMessageID: pulsar.EarliestMessageID()})), payloads(0, 5))
	equalStrings(t, read(newReader(pulsar.ReaderOptions{StartMessageID: ids[2]})), payloads(3, 2))
	equalStrings(t, read(newReader(pulsar.ReaderOptions{StartMessageID: ids[2], StartMessageIDInclusive: true})), payloads(2, 3))

	seeker := newReader(pulsar.ReaderOptions{StartMessageID: pulsar.EarliestMessageID()})
	ctx0, cancel0 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel0()
	if _, err := seeker.Next(ctx0); err != nil {
		t.Fatal(err)
	}
	if err := seeker.Seek(ids[3]); err != nil {
		t.Fatal(err)
	}
	equalStrings(t, read(seeker), payloads(4, 1))

	latest := newReader(pulsar.ReaderOptions{StartMessageID: pulsar.LatestMessageID()})
	if latest.HasNext() {
		t.Fatal("a reader from latest has a message before anything new was sent")
	}
	sendN(t, p, 5, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := latest.Next(ctx)
	if err != nil || string(m.Payload()) != "m-5" {
		t.Fatalf("reader from latest: %v, %v", m, err)
	}
}

func TestUnsubscribeForgetsSubscription(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "unsub", DisableBatching: true})
	cons, err := c.Subscribe(pulsar.ConsumerOptions{Topic: "unsub", SubscriptionName: "s"})
	if err != nil {
		t.Fatal(err)
	}
	sendN(t, p, 0, 3)
	if err := cons.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	cons.Close()
	sendN(t, p, 3, 1)
	// A new subscription of that name starts at latest again.
	again := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "unsub", SubscriptionName: "s"})
	sendN(t, p, 4, 1)
	equalStrings(t, receiveN(t, again, 1, true), []string{"m-4"})
}
