package servicetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// ChangeInTopic reads topic from its start until match accepts an event
// (a change, or a transaction's BEGIN or COMMIT), and returns where it is:
// its transaction's commit LSN, its position in it and the id of the
// message (frame) holding it. Messages that are not frames are passed over;
// what names the event in the failure.
func ChangeInTopic(t testing.TB, url, topic, what string, match func(*event.Event) bool) (event.LSN, int, string) {
	t.Helper()
	client, err := pulsarclient.New(pulsarclient.Options{URL: url, Log: Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: topic, StartMessageID: pulsar.EarliestMessageID()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		msg, err := reader.Next(ctx)
		if err != nil {
			t.Fatalf("%s not in topic %s: %v", what, topic, err)
		}
		f, err := event.DecodeFrame(msg.Payload())
		if err != nil {
			continue
		}
		for _, ev := range f.Events() {
			if match(ev) {
				return ev.LSN, ev.Seq, msg.ID().String()
			}
		}
	}
}

// WaitHandedOverTwice waits until the broker has handed subscription's
// backlog on topic to the apply twice since now. Call it once the apply is
// blocked: the second hand-over starts only once the session that held the
// backlog ended blocked, so a change behind the blocked one that is still
// missing on the target then was held back, not late. An empty backlog fails
// the test: the blocked messages were acknowledged.
func WaitHandedOverTwice(t testing.TB, adminURL, topic, subscription string) {
	t.Helper()
	admin, err := pulsaradmin.NewClient(&pulsaradmin.Config{WebServiceURL: adminURL})
	if err != nil {
		t.Fatal(err)
	}
	name, err := utils.GetTopicName(topic)
	if err != nil {
		t.Fatal(err)
	}
	stats := func() (utils.SubscriptionStats, error) {
		all, err := admin.Topics().GetStats(*name)
		if err != nil {
			return utils.SubscriptionStats{}, err
		}
		sub, ok := all.Subscriptions[subscription]
		if !ok {
			return sub, fmt.Errorf("no subscription %s on %s", subscription, topic)
		}
		return sub, nil
	}
	before, err := stats()
	if err != nil {
		t.Fatal(err)
	}
	if before.MsgBacklog == 0 {
		t.Fatalf("the apply is held back but subscription %s on %s has no backlog: the held messages were acknowledged", subscription, topic)
	}
	testwait.For(t, 2*time.Minute, fmt.Sprintf("backlog of %d messages handed to the apply twice", before.MsgBacklog), func() error {
		now, err := stats()
		if err != nil {
			return err
		}
		if out := now.MsgOutCounter - before.MsgOutCounter; out < 2*before.MsgBacklog {
			return fmt.Errorf("%d messages delivered", out)
		}
		return nil
	})
}
