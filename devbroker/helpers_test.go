package devbroker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	plog "github.com/apache/pulsar-client-go/pulsar/log"
)

func newClient(t testing.TB, url string, tune ...func(*pulsar.ClientOptions)) pulsar.Client {
	t.Helper()
	opts := pulsar.ClientOptions{URL: url, OperationTimeout: 10 * time.Second, ConnectionTimeout: 5 * time.Second, Logger: plog.DefaultNopLogger()}
	for _, f := range tune {
		f(&opts)
	}
	c, err := pulsar.NewClient(opts)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func newProducer(t testing.TB, c pulsar.Client, opts pulsar.ProducerOptions) pulsar.Producer {
	t.Helper()
	p, err := c.CreateProducer(opts)
	if err != nil {
		t.Fatalf("create producer on %s: %v", opts.Topic, err)
	}
	t.Cleanup(p.Close)
	return p
}

func newConsumer(t testing.TB, c pulsar.Client, opts pulsar.ConsumerOptions) pulsar.Consumer {
	t.Helper()
	cons, err := c.Subscribe(opts)
	if err != nil {
		t.Fatalf("subscribe %s to %s: %v", opts.SubscriptionName, opts.Topic, err)
	}
	t.Cleanup(cons.Close)
	return cons
}

func sendN(t testing.TB, p pulsar.Producer, from, n int) []pulsar.MessageID {
	t.Helper()
	ids := make([]pulsar.MessageID, 0, n)
	for i := from; i < from+n; i++ {
		id, err := p.Send(context.Background(), &pulsar.ProducerMessage{Payload: []byte(fmt.Sprintf("m-%d", i))})
		if err != nil {
			t.Fatalf("send m-%d: %v", i, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// receive reads one message or fails the test after d.
func receive(t testing.TB, c pulsar.Consumer, d time.Duration) pulsar.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := c.Receive(ctx)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return m
}

// receiveN reads n messages, acknowledging them when ack is set, and
// returns their payloads.
func receiveN(t testing.TB, c pulsar.Consumer, n int, ack bool) []string {
	t.Helper()
	out := make([]string, 0, n)
	for range n {
		m := receive(t, c, 20*time.Second)
		out = append(out, string(m.Payload()))
		if ack {
			if err := c.Ack(m); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
	}
	return out
}

// expectNothing checks that no message arrives within d.
func expectNothing(t testing.TB, c pulsar.Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if m, err := c.Receive(ctx); err == nil {
		t.Fatalf("unexpected message %q (id %v)", m.Payload(), m.ID())
	}
}

func payloads(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m-%d", from+i)
	}
	return out
}

func equalStrings(t testing.TB, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("got messages %q, want %q", got, want)
	}
}
