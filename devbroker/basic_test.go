package devbroker_test

import (
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/internal/brokertest"
)

func TestProduceConsumeShortName(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "basic", SubscriptionName: "s"})
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "persistent://public/default/basic"})
	sendN(t, p, 0, 10)
	equalStrings(t, receiveN(t, cons, 10, true), payloads(0, 10))
}
