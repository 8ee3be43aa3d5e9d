package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/internal/brokertest"
)

// BenchmarkProduceConsume measures end-to-end throughput of 512-byte
// messages with client batching on: every receipt waits for the group
// commit's fsync, and a consumer on the same topic acknowledges everything.
// Run with: go test ./internal/broker -run '^$' -bench ProduceConsume -benchtime 500000x
func BenchmarkProduceConsume(b *testing.B) {
	br := brokertest.Start(b)
	c := newClient(b, br.URL())
	cons := newConsumer(b, c, pulsar.ConsumerOptions{Topic: "bench", SubscriptionName: "s", ReceiverQueueSize: 5000})
	p := newProducer(b, c, pulsar.ProducerOptions{Topic: "bench", MaxPendingMessages: 20_000, BatchingMaxPublishDelay: 5 * time.Millisecond})
	payload := make([]byte, 512)
	sendErr := make(chan error, 1)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	go func() {
		for range b.N {
			p.SendAsync(context.Background(), &pulsar.ProducerMessage{Payload: payload}, func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
				if err != nil {
					select {
					case sendErr <- err:
					default:
					}
				}
			})
		}
		_ = p.Flush()
	}()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err := cons.Receive(ctx)
		cancel()
		if err != nil {
			b.Fatalf("receive: %v", err)
		}
		cons.AckID(m.ID())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-sendErr:
		b.Fatalf("send: %v", err)
	default:
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
