package pg2broker

import (
	"context"
	"fmt"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/event"
)

// tail is the last frame of the topic: where a restarted capture resumes.
type tail struct {
	lsn event.LSN
	// seq is the position of the last event of the transaction the topic
	// holds: its COMMIT's when the frame was the last fragment.
	seq      int
	fragment int
	last     bool
	system   string
}

func (t *tail) String() string {
	if t == nil {
		return "empty topic"
	}
	return fmt.Sprintf("lsn %s fragment %d seq %d", t.lsn, t.fragment, t.seq)
}

// readTail reads the topic's last frame. The topic, not the slot, is the
// record of what was published: the slot's confirmed position may lag it.
//
// The last entry may be the last chunk of a frame published in chunks (one
// change larger than a message), which a reader started there drops: it
// needs the first chunk. So the reader starts a few entries earlier, more
// each time it finds no whole message after its start, and the tail is the
// last whole frame it reads. A chunked frame cut short by a crash is not
// whole, so the frame before it is the tail, and the capture publishes the
// transaction again.
func readTail(ctx context.Context, client pulsar.Client, topic string) (*tail, error) {
	last, err := lastEntry(client, topic)
	if err != nil || last == nil {
		return nil, err
	}
	for back := int64(0); ; back = max(1, 4*back) {
		start, fromEarliest := pulsar.EarliestMessageID(), last.EntryID()-back < 0
		if !fromEarliest {
			start = pulsar.NewMessageID(last.LedgerID(), last.EntryID()-back, -1, last.PartitionIdx())
		}
		msg, err := lastWhole(ctx, client, topic, start)
		if err != nil {
			return nil, err
		}
		if msg != nil {
			return tailOf(topic, msg)
		}
		if fromEarliest {
			return nil, fmt.Errorf("read the last message of %s: no whole message in the topic, which holds entries up to %s", topic, last)
		}
	}
}

// lastEntry is the id of the topic's last entry, nil when it is empty.
func lastEntry(client pulsar.Client, topic string) (pulsar.MessageID, error) {
	reader, err := client.CreateReader(pulsar.ReaderOptions{
		Topic:                   topic,
		StartMessageID:          pulsar.LatestMessageID(),
		StartMessageIDInclusive: true,
	})
	if err != nil {
		return nil, fmt.Errorf("read the last message of %s: %w", topic, err)
	}
	defer reader.Close()
	if !reader.HasNext() {
		return nil, nil
	}
	id, err := reader.GetLastMessageID()
	if err != nil {
		return nil, fmt.Errorf("read the last message id of %s: %w", topic, err)
	}
	return id, nil
}

// lastWhole reads topic from start (inclusive) to its end and returns the
// last whole message, nil when there is none after start.
func lastWhole(ctx context.Context, client pulsar.Client, topic string, start pulsar.MessageID) (pulsar.Message, error) {
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: topic, StartMessageID: start, StartMessageIDInclusive: true})
	if err != nil {
		return nil, fmt.Errorf("read the last message of %s: %w", topic, err)
	}
	defer reader.Close()
	var last pulsar.Message
	for reader.HasNext() {
		// HasNext counts entries; chunks of a message whose first chunk is
		// before start never make a message, so a short wait ends the read.
		readCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		msg, err := reader.Next(readCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			break
		}
		last = msg
	}
	return last, nil
}

func tailOf(topic string, msg pulsar.Message) (*tail, error) {
	// The header is enough: a frame the apply cannot read (and blocks on)
	// still says what was published.
	h, changes, err := event.DecodeHeader(msg.Payload())
	if err != nil {
		return nil, fmt.Errorf("last message %s of %s is not a pgtandem frame (not a pgtandem topic?): %w", msg.ID(), topic, err)
	}
	t := &tail{lsn: h.LSN, fragment: h.Fragment, last: h.Last, system: h.SystemID, seq: h.FirstChange + changes - 1}
	if h.Last {
		t.seq = h.TotalChanges + 1
	}
	return t, nil
}

// resume drops the events a previous run already published: every
// transaction that committed before the tail's, and the tail transaction's
// events up to the tail's seq.
type resume struct {
	tail *tail
}

func newResume(t *tail) *resume { return &resume{tail: t} }

func (r *resume) published(ev *event.Event) bool {
	if r.tail == nil {
		return false
	}
	if ev.LSN < r.tail.lsn || (ev.LSN == r.tail.lsn && ev.Seq <= r.tail.seq) {
		return true
	}
	if ev.LSN > r.tail.lsn {
		r.tail = nil
	}
	return false
}
