package pg2broker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/event"
)

// tail is the last message of the topic: where a restarted capture resumes.
type tail struct {
	lsn    event.LSN
	seq    int
	system string
}

func (t *tail) String() string {
	if t == nil {
		return "empty topic"
	}
	return fmt.Sprintf("lsn %s seq %d", t.lsn, t.seq)
}

// readTail reads the topic's last message. The topic, not the slot, is the
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
	props := msg.Properties()
	var t tail
	var lsn pglogrepl.LSN
	if lsn, err = pglogrepl.ParseLSN(props[event.PropLSN]); err != nil {
		return nil, fmt.Errorf("last message %s of %s has no valid %s property (not a pgtandem topic?): %w", msg.ID(), topic, event.PropLSN, err)
	}
	t.lsn = event.LSN(lsn)
	if t.seq, err = strconv.Atoi(props[event.PropSeq]); err != nil {
		return nil, fmt.Errorf("last message %s of %s has no valid %s property: %w", msg.ID(), topic, event.PropSeq, err)
	}
	t.system = props[event.PropSystem]
	return &t, nil
}

// resume drops the messages a previous run already published: every
// transaction that committed before the tail's, and the tail transaction's
// messages up to the tail's seq.
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
