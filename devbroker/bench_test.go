package devbroker_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/internal/brokertest"
)

// BenchmarkProduceConsume measures end-to-end throughput of 512-byte
// messages with client batching on: every receipt waits for the group
// commit's fsync, and a consumer on the same topic acknowledges everything.
// Run with: go test ./devbroker -run '^$' -bench ProduceConsume -benchtime 500000x
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

// BenchmarkClientCPU prints what pulsar-client-go and the broker together
// cost in CPU per message, producer and consumer in one process, with the
// settings pg2broker and broker2pg use, without message properties and with
// the four pgtandem sets on a row change. It is the floor under the
// pipeline's own work, and it shows what each property costs.
// Run with: go test ./devbroker -run '^$' -bench ClientCPU -benchtime 600000x
func BenchmarkClientCPU(b *testing.B) {
	for _, props := range []map[string]string{nil, {
		"pgtandem.lsn": "0/1A2B3C8", "pgtandem.xid": "123456", "pgtandem.kind": "update", "pgtandem.table": "public.pgbench_accounts",
	}} {
		b.Run(fmt.Sprintf("properties=%d", len(props)), func(b *testing.B) {
			br := brokertest.Start(b)
			c := newClient(b, br.URL())
			topic := fmt.Sprintf("cpu-%d", len(props))
			cons := newConsumer(b, c, pulsar.ConsumerOptions{Topic: topic, SubscriptionName: "s", Type: pulsar.Failover})
			p := newProducer(b, c, pulsar.ProducerOptions{Topic: topic, SendTimeout: -1, MaxPendingMessages: 10000,
				BatchingMaxPublishDelay: 2 * time.Millisecond, BatchingMaxMessages: 2000, BatchingMaxSize: 1 << 20, CompressionType: pulsar.LZ4})
			payload := []byte(strings.Repeat(`{"name":"abalance","type":"integer"},`, 12))
			b.ResetTimer()
			cpu := cpuTime()
			go func() {
				for range b.N {
					p.SendAsync(context.Background(), &pulsar.ProducerMessage{Payload: payload, Key: "public.pgbench_accounts:81234", Properties: props},
						func(pulsar.MessageID, *pulsar.ProducerMessage, error) {})
				}
			}()
			for i := range b.N {
				m, err := cons.Receive(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				if i%1000 == 999 || i == b.N-1 {
					_ = cons.AckIDCumulative(m.ID())
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/1e3/float64(b.N), "cpu-µs/msg")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
