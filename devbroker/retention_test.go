package devbroker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// smallSegments cuts topic logs into segments of a few records each.
const smallSegments = 1024

// bigPayload is a message a few of which fill a small segment.
var bigPayload = []byte(strings.Repeat("x", 200))

func sendBig(t *testing.T, p pulsar.Producer, n int) []pulsar.MessageID {
	t.Helper()
	ids := make([]pulsar.MessageID, n)
	for i := range ids {
		id, err := p.Send(t.Context(), &pulsar.ProducerMessage{Payload: bigPayload})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		ids[i] = id
	}
	return ids
}

func internalStats(t *testing.T, a pulsaradmin.Client, topic *utils.TopicName) utils.PersistentTopicInternalStats {
	t.Helper()
	st, err := a.Topics().GetInternalStats(*topic)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// entriesBetween counts the entries after from up to and including to, as
// a caller of internalStats would.
func entriesBetween(ledgers []utils.LedgerInfo, from, to pulsar.MessageID) int64 {
	var n int64
	for _, l := range ledgers {
		if l.LedgerID < from.LedgerID() || l.LedgerID > to.LedgerID() {
			continue
		}
		lo, hi := int64(0), l.Entries-1
		if l.LedgerID == from.LedgerID() {
			lo = from.EntryID() + 1
		}
		if l.LedgerID == to.LedgerID() {
			hi = min(hi, to.EntryID())
		}
		if hi >= lo {
			n += hi - lo + 1
		}
	}
	return n
}

func TestInternalStatsListsLedgers(t *testing.T) {
	b := brokertest.Start(t, brokertest.WithConfig(func(c *devbroker.Config) { c.SegmentSize = smallSegments }))
	c := newClient(t, b.URL())
	a := newAdmin(t, b, "")
	topic, _ := utils.GetTopicName("ledgers")
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: topic.String(), DisableBatching: true})
	ids := sendBig(t, p, 40)

	st := internalStats(t, a, topic)
	if len(st.Ledgers) < 4 {
		t.Fatalf("40 messages of 200 bytes in 1 KiB segments: %d ledgers %+v", len(st.Ledgers), st.Ledgers)
	}
	perLedger := map[int64]int64{}
	for _, id := range ids {
		perLedger[id.LedgerID()]++
	}
	var entries, size int64
	for i, l := range st.Ledgers {
		if i > 0 && l.LedgerID <= st.Ledgers[i-1].LedgerID {
			t.Fatalf("ledgers not oldest first: %+v", st.Ledgers)
		}
		if l.Entries != perLedger[l.LedgerID] || (l.Entries > 0) != (l.Size > 0) {
			t.Fatalf("ledger %d: %d entries, %d bytes; the producer got %d ids in it", l.LedgerID, l.Entries, l.Size, perLedger[l.LedgerID])
		}
		delete(perLedger, l.LedgerID)
		entries += l.Entries
		size += l.Size
	}
	if len(perLedger) != 0 {
		t.Fatalf("message ids in ledgers not listed: %v", perLedger)
	}
	if entries != st.NumberOfEntries || entries != 40 || size != st.TotalSize {
		t.Fatalf("ledgers hold %d entries, %d bytes; numberOfEntries %d, totalSize %d", entries, size, st.NumberOfEntries, st.TotalSize)
	}
	for i, id := range ids {
		if i > 0 && ids[i-1].LedgerID() == id.LedgerID() && ids[i-1].EntryID()+1 != id.EntryID() {
			t.Fatalf("ids %v then %v", ids[i-1], id)
		}
	}
	if last := st.Ledgers[len(st.Ledgers)-1]; st.CurrentLedgerEntries != last.Entries || st.CurrentLedgerSize != last.Size {
		t.Fatalf("currentLedgerEntries %d, currentLedgerSize %d; last ledger %+v", st.CurrentLedgerEntries, st.CurrentLedgerSize, last)
	}
	if want := fmt.Sprintf("%d:%d", ids[39].LedgerID(), ids[39].EntryID()); st.LastConfirmedEntry != want {
		t.Fatalf("lastConfirmedEntry %s, want %s", st.LastConfirmedEntry, want)
	}
	// What callers use it for: counting entries between two message ids
	// across segments.
	for _, r := range [][2]int{{0, 39}, {3, 30}, {10, 11}, {5, 5}} {
		if got := entriesBetween(st.Ledgers, ids[r[0]], ids[r[1]]); got != int64(r[1]-r[0]) {
			t.Errorf("entries after %v up to %v: %d, want %d", ids[r[0]], ids[r[1]], got, r[1]-r[0])
		}
	}
}

// TestRetentionDeletesConsumedSegmentsOnly runs retention every 100 ms: the
// segments every durable subscription has acknowledged go within seconds,
// the first one a subscription still needs stays until it is acknowledged.
func TestRetentionDeletesConsumedSegmentsOnly(t *testing.T) {
	b := brokertest.Start(t, brokertest.WithConfig(func(c *devbroker.Config) {
		c.SegmentSize = smallSegments
		c.RetentionTime = time.Millisecond
		c.RetentionInterval = 100 * time.Millisecond
	}))
	c := newClient(t, b.URL())
	a := newAdmin(t, b, "")
	topic, _ := utils.GetTopicName("retained")
	if err := a.Topics().Create(*topic, 0); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"fast", "slow"} {
		if err := a.Subscriptions().Create(*topic, sub, utils.Earliest); err != nil {
			t.Fatal(err)
		}
	}
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: topic.String(), DisableBatching: true})
	ids := sendBig(t, p, 40)

	// "slow" acknowledges everything before the first message of the
	// fourth ledger; "fast" acknowledges everything.
	keep := 0
	for ledgers := 1; ledgers < 4; keep++ {
		if keep+1 >= len(ids) {
			t.Fatalf("40 messages fill fewer than 4 ledgers: %v", ids)
		}
		if ids[keep+1].LedgerID() != ids[keep].LedgerID() {
			ledgers++
		}
	}
	fast := newConsumer(t, c, pulsar.ConsumerOptions{Topic: topic.String(), SubscriptionName: "fast", AckWithResponse: true})
	receiveN(t, fast, len(ids), true)
	slow := newConsumer(t, c, pulsar.ConsumerOptions{Topic: topic.String(), SubscriptionName: "slow", AckWithResponse: true})
	receiveN(t, slow, keep, true)

	oldest := func(want int64) func() error {
		return func() error {
			st, err := a.Topics().GetInternalStats(*topic)
			if err != nil {
				return err
			}
			if got := st.Ledgers[0].LedgerID; got != want {
				return fmt.Errorf("oldest ledger %d, want %d (ledgers %+v)", got, want, st.Ledgers)
			}
			return nil
		}
	}
	kept := ids[keep].LedgerID()
	testwait.For(t, 5*time.Second, "retention to delete the ledgers both subscriptions acknowledged", oldest(kept))

	// The kept ledger stays readable while retention keeps running; once
	// acknowledged it goes too (the newest segment, taking appends, always
	// stays).
	rest := make([]pulsar.Message, 0, len(ids)-keep)
	for range len(ids) - keep {
		rest = append(rest, receive(t, slow, 20*time.Second))
	}
	if rest[0].ID().LedgerID() != kept || rest[0].ID().EntryID() != ids[keep].EntryID() {
		t.Fatalf("\"slow\" resumed at %v, want %v", rest[0].ID(), ids[keep])
	}
	st := internalStats(t, a, topic)
	if st.Ledgers[0].LedgerID != kept {
		t.Fatalf("ledger %d, still needed by \"slow\", was deleted: ledgers %+v", kept, st.Ledgers)
	}
	for _, m := range rest {
		if err := slow.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, 5*time.Second, "retention to delete the ledgers acknowledged at last", oldest(st.Ledgers[len(st.Ledgers)-1].LedgerID))
}
