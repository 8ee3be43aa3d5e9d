package pg2broker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgtandem/pgtandem/internal/pulsarclient"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// publisher owns the Pulsar client and the topic's two producers for the
// whole life of the service, across sessions: a PostgreSQL failure must not
// churn producers, because a producer closed while it reconnects can stay
// registered at the broker and keep its own name busy.
type publisher struct {
	cfg Config
	log *slog.Logger
	reg prometheus.Registerer

	topic    string
	client   pulsar.Client
	producer pulsar.Producer
	// chunker takes events too large for one message: batching and chunking
	// exclude each other in the client.
	chunker pulsar.Producer
}

// open connects to topic, reusing what is already open for it.
func (p *publisher) open(topic string) error {
	if p.producer != nil && p.topic == topic {
		return nil
	}
	p.close()
	client, err := pulsarclient.New(pulsarclient.Options{URL: p.cfg.PulsarURL, Token: p.cfg.PulsarToken, TLS: p.cfg.PulsarTLS, Log: p.log, Registerer: p.reg})
	if err != nil {
		return err
	}
	name := catalog.ProducerName(p.cfg.Cluster)
	producer, err := client.CreateProducer(pulsar.ProducerOptions{
		Topic: topic,
		Name:  name,
		// Never time a message out: a failed message followed by a
		// delivered one would leave a gap that the topic's tail hides.
		SendTimeout:             -1,
		MaxPendingMessages:      p.cfg.MaxInFlight,
		BatchingMaxPublishDelay: p.cfg.BatchDelay,
		BatchingMaxMessages:     2000,
		BatchingMaxSize:         1 << 20,
		CompressionType:         pulsar.LZ4,
	})
	if err != nil {
		client.Close()
		return fmt.Errorf("create producer %s on %s: %w", name, topic, err)
	}
	chunker, err := client.CreateProducer(pulsar.ProducerOptions{
		Topic:           topic,
		Name:            name + "-chunked",
		SendTimeout:     -1,
		DisableBatching: true,
		EnableChunking:  true,
		CompressionType: pulsar.LZ4,
	})
	if err != nil {
		producer.Close()
		client.Close()
		return fmt.Errorf("create producer %s-chunked on %s: %w", name, topic, err)
	}
	p.topic, p.client, p.producer, p.chunker = topic, client, producer, chunker
	return nil
}

// drain waits until the broker has acknowledged everything sent, so that
// the next session reads a tail that no message in flight can still extend.
func (p *publisher) drain(ctx context.Context) error {
	if p.producer == nil {
		return nil
	}
	if err := p.producer.FlushWithCtx(ctx); err != nil {
		return fmt.Errorf("drain producer: %w", err)
	}
	return nil
}

func (p *publisher) close() {
	if p.producer == nil {
		return
	}
	p.chunker.Close()
	p.producer.Close()
	p.client.Close()
	p.client, p.producer, p.chunker = nil, nil, nil
}
