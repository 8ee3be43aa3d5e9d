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
func readTail(ctx context.Context, client pulsar.Client, topic string) (*tail, error) {
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
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := reader.Next(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the last message of %s: %w", topic, err)
	}
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
