package broker2pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	"github.com/pgtandem/pgtandem/internal/servicetest"
)

// TestBacklogWithToken: against a broker that requires a token, the backlog
// is read with the token the services have; without it, or with a wrong
// one, the read fails with ErrAdminUnauthorized instead of reading as 0.
func TestBacklogWithToken(t *testing.T) {
	const token = "secret-backlog-token"
	b := brokertest.Start(t, brokertest.WithToken(token))
	topic := "persistent://public/default/backlog-token"
	client, err := pulsarclient.New(pulsarclient.Options{URL: b.URL(), Token: token, Log: servicetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	// The subscription exists from the start, so it has every message to
	// come as backlog.
	consumer, err := client.Subscribe(pulsar.ConsumerOptions{Topic: topic, SubscriptionName: "backlog-sub", SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	if err != nil {
		t.Fatal(err)
	}
	consumer.Close()
	producer, err := client.CreateProducer(pulsar.ProducerOptions{Topic: topic, DisableBatching: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	const sent = 7
	for i := range sent {
		if _, err := producer.Send(context.Background(), &pulsar.ProducerMessage{Payload: []byte(fmt.Sprint("m", i))}); err != nil {
			t.Fatal(err)
		}
	}

	read := func(token string) (int64, error) {
		r, err := broker2pg.NewBacklogReader(b.AdminURL(), token, pulsarclient.TLS{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Backlog(context.Background(), topic, "backlog-sub")
	}
	if n, err := read(token); err != nil || n != sent {
		t.Fatalf("backlog with the token = %d, %v; want %d", n, err, sent)
	}
	for _, wrong := range []string{"", "not-the-token"} {
		n, err := read(wrong)
		if !errors.Is(err, broker2pg.ErrAdminUnauthorized) {
			t.Fatalf("backlog with token %q = %d, %v; want ErrAdminUnauthorized", wrong, n, err)
		}
		t.Logf("with token %q: %v", wrong, err)
		if !strings.Contains(err.Error(), topic) || strings.Contains(err.Error(), token) {
			t.Errorf("error %q must name the topic and not show the token", err)
		}
	}
}
