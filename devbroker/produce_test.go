package devbroker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/internal/brokertest"
)

func TestOrderingOf100kBatchedMessages(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	const n = 100_000
	cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "ordering", SubscriptionName: "s", ReceiverQueueSize: 2000})
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "ordering", BatchingMaxPublishDelay: 5 * time.Millisecond, MaxPendingMessages: 10_000})
	var failed atomic.Value
	go func() {
		for i := range n {
			p.SendAsync(context.Background(), &pulsar.ProducerMessage{Payload: []byte(strconv.Itoa(i))},
				func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
					if err != nil {
						failed.Store(err)
					}
				})
		}
		_ = p.Flush()
	}()
	for i := range n {
		m := receive(t, cons, 30*time.Second)
		if got := string(m.Payload()); got != strconv.Itoa(i) {
			t.Fatalf("message %d has payload %q", i, got)
		}
		cons.AckID(m.ID())
	}
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("send failed: %v", err)
	}
}

func TestBatchingWithCompressionKeepsMessageFields(t *testing.T) {
	for _, ct := range []struct {
		name string
		typ  pulsar.CompressionType
	}{{"LZ4", pulsar.LZ4}, {"ZSTD", pulsar.ZSTD}} {
		t.Run(ct.name, func(t *testing.T) {
			b := brokertest.Start(t)
			c := newClient(t, b.URL())
			topic := "compressed-" + ct.name
			cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: topic, SubscriptionName: "s"})
			p := newProducer(t, c, pulsar.ProducerOptions{Topic: topic, CompressionType: ct.typ, BatchingMaxMessages: 50, BatchingMaxPublishDelay: 50 * time.Millisecond})
			eventTime := time.UnixMilli(1_700_000_000_000)
			const n = 200
			for i := range n {
				p.SendAsync(context.Background(), &pulsar.ProducerMessage{
					Payload:    bytes.Repeat([]byte(fmt.Sprintf("row %d;", i)), 50),
					Key:        fmt.Sprintf("key-%d", i%7),
					Properties: map[string]string{"i": strconv.Itoa(i)},
					EventTime:  eventTime,
				}, func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
					if err != nil {
						t.Errorf("send: %v", err)
					}
				})
			}
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			batched := 0
			for i := range n {
				m := receive(t, cons, 10*time.Second)
				if !bytes.Equal(m.Payload(), bytes.Repeat([]byte(fmt.Sprintf("row %d;", i)), 50)) {
					t.Fatalf("message %d payload differs", i)
				}
				if m.Key() != fmt.Sprintf("key-%d", i%7) || m.Properties()["i"] != strconv.Itoa(i) || !m.EventTime().Equal(eventTime) {
					t.Fatalf("message %d: key %q, properties %v, event time %v", i, m.Key(), m.Properties(), m.EventTime())
				}
				if m.ID().BatchSize() > 1 {
					batched++
				}
				cons.Ack(m)
			}
			if batched == 0 {
				t.Fatal("no message arrived in a batch; the test did not exercise batching")
			}
		})
	}
}

func TestChunkedTenMiBMessage(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "chunked", SubscriptionName: "s"})
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "chunked", EnableChunking: true, DisableBatching: true})
	big := make([]byte, 10<<20)
	_, _ = rand.Read(big)
	if _, err := p.Send(context.Background(), &pulsar.ProducerMessage{Payload: big, Properties: map[string]string{"k": "v"}}); err != nil {
		t.Fatalf("send 10 MiB: %v", err)
	}
	sendN(t, p, 0, 1)
	m := receive(t, cons, 30*time.Second)
	if !bytes.Equal(m.Payload(), big) || m.Properties()["k"] != "v" {
		t.Fatalf("reassembled message differs: %d bytes, properties %v", len(m.Payload()), m.Properties())
	}
	if err := cons.Ack(m); err != nil {
		t.Fatal(err)
	}
	if got := string(receive(t, cons, 10*time.Second).Payload()); got != "m-0" {
		t.Fatalf("message after the chunked one is %q", got)
	}
}

func TestPartitionedTopicsAreRefused(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL(), func(o *pulsar.ClientOptions) { o.OperationTimeout = 3 * time.Second })
	_, err := c.CreateProducer(pulsar.ProducerOptions{Topic: "orders-partition-1"})
	if err == nil {
		t.Fatal("a producer on a -partition-N topic was created")
	}
}
