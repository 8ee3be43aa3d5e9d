package cursor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/event"
)

// Position is where a consumer stands in the change stream: a cluster, whose
// topic it reads, and the last message it processed there. Its text form is
// "cluster/ledger:entry:partition" ("cluster/" alone before the first
// message).
type Position struct {
	Cluster string
	// MessageID is an [ID] in text form, "" before the first message.
	MessageID string
}

func (p Position) String() string { return p.Cluster + "/" + p.MessageID }

// ParsePosition reads a Position from its text form.
func ParsePosition(s string) (Position, error) {
	cluster, id, ok := strings.Cut(s, "/")
	if !ok || cluster == "" {
		return Position{}, &IDError{Text: s}
	}
	if id != "" {
		if _, err := ParseID(id); err != nil {
			return Position{}, err
		}
	}
	return Position{Cluster: cluster, MessageID: id}, nil
}

// Config says what a Consumer reads.
type Config struct {
	// Client reaches the broker (pulsar-client-go; Apache Pulsar or
	// pgtandem's development broker).
	Client pulsar.Client
	// Topics maps each cluster's name, as pgtandem's configuration names
	// it, to the cluster's topic: every topic the stream may hop to.
	Topics map[string]string
	// Subscription is the durable, exclusive subscription the consumer
	// uses on every topic; `pgtandem cursor prepare` creates it on the
	// target's topic at each switch. One consumer reads a stream at a
	// time: a standby instance needs leader election outside the consumer
	// (a Failover subscription is per topic, and would let the standby
	// read the topic the active one has left).
	Subscription string
	// Start is where the consumer starts: the Position of the last batch
	// the application processed, stored with its effects. For a first
	// start, a cluster alone (MessageID ""): the subscription's own place
	// on that cluster's topic, the topic's first message when the
	// subscription is new.
	Start Position
	// IncludeOwn delivers the changes of pgtandem's own tables too (switch
	// markers, cursor rows); by default they are passed over.
	IncludeOwn bool
	// Log receives a line at each hop; nil discards.
	Log *slog.Logger
	// OnHop, when set, is called at each hop once the consumer is
	// subscribed to the new topic, before the first batch from it.
	OnHop func(hop *Mark)
}

// ConfigError names a configuration field that cannot work.
type ConfigError struct {
	Field, Reason string
}

func (e *ConfigError) Error() string { return "cursor consumer: " + e.Field + ": " + e.Reason }

// Validate checks the configuration; errors are *ConfigError.
func (c *Config) Validate() error {
	switch {
	case c.Client == nil:
		return &ConfigError{Field: "Client", Reason: "missing"}
	case len(c.Topics) == 0:
		return &ConfigError{Field: "Topics", Reason: "name the topic of each cluster"}
	case c.Subscription == "":
		return &ConfigError{Field: "Subscription", Reason: "missing"}
	case c.Topics[c.Start.Cluster] == "":
		return &ConfigError{Field: "Start", Reason: fmt.Sprintf("cluster %q has no topic in Topics", c.Start.Cluster)}
	}
	if c.Start.MessageID != "" {
		if _, err := ParseID(c.Start.MessageID); err != nil {
			return &ConfigError{Field: "Start", Reason: err.Error()}
		}
	}
	return nil
}

// Batch is one frame of a source transaction: all of it, or one fragment
// of a large one (Header.Fragment, Header.Last).
type Batch struct {
	// Position is the batch's place in the stream: store it with what the
	// batch changed, and start from it after a restart.
	Position Position
	Topic    string
	event.Header
	// Changes are the frame's changes in commit order, without pgtandem's
	// own unless Config.IncludeOwn.
	Changes []*event.Event

	// ackID is the message received before this one on its topic, nil
	// for the first message of a new subscription: see Consumer.Ack.
	ackID pulsar.MessageID
}

// LostError reports a message a consumer had to find in a topic and that
// retention has deleted: the changes between it and the first message
// still there are lost for this consumer. Nothing after it is delivered.
type LostError struct {
	Topic string
	// Want is the message the consumer looked for (its stored position,
	// or the cut of a switch), First the first message the topic still
	// has after it (zero when it has none).
	Want, First ID
	// Hop is the switch the consumer was hopping through, nil for a start
	// at a stored position.
	Hop *Mark
	// FirstHeader is the header of First's frame: its transaction's commit
	// LSN and time (zero when there is none or it could not be decoded).
	FirstHeader event.Header
}

func (e *LostError) Error() string {
	what := "the stored position " + e.Want.String()
	since := " after it"
	if e.Hop != nil {
		what = fmt.Sprintf("the cut of switch %s (%s -> %s) at %s", e.Hop.SwitchID, e.Hop.From, e.Hop.To, e.Want)
		since = fmt.Sprintf(" committed on %s after %s (%s)", e.Hop.To, e.Hop.ToCommitLSN, e.Hop.ToCommitTime.UTC().Format("2006-01-02 15:04:05.000Z"))
	}
	until := ""
	if e.FirstHeader.LSN != 0 {
		until = fmt.Sprintf(", before %s (%s)", e.FirstHeader.LSN, e.FirstHeader.CommitTime.UTC().Format("2006-01-02 15:04:05.000Z"))
	}
	first := "the first message after it is " + e.First.String()
	if e.First == (ID{}) {
		first = "the topic holds nothing from it on"
	}
	return fmt.Sprintf("%s is no longer in %s: %s, so the changes%s%s were deleted (retention) before this consumer read them; "+
		"nothing after them was delivered: recover them from the cluster before going on (pgtandem cursor prepare keeps a switch's cut for late consumers)",
		what, e.Topic, first, since, until)
}

// lostAt is the *LostError of want, missing from topic, whose first
// message after it is first.
func lostAt(topic string, want ID, first pulsar.Message, hop *Mark) *LostError {
	lost := &LostError{Topic: topic, Want: want, First: IDOf(first.ID()), Hop: hop}
	if h, _, err := event.DecodeHeader(first.Payload()); err == nil {
		lost.FirstHeader = h
	}
	return lost
}

// DecodeError reports a message that is not a frame this build reads.
// Nothing after it is delivered.
type DecodeError struct {
	Topic string
	ID    ID
	Err   error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("message %s of %s: %v", e.ID, e.Topic, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Consumer reads one logical change stream across switches: the topic of
// the cluster that took the writes, up to the cut of the switch that moved
// them, then the next cluster's topic from its cut, and so on for every
// switch and rollback. A switch that was undone does not move it.
//
// It delivers each frame once per run, in commit order. Exactly-once
// across restarts, including a restart at a hop, comes from the
// application storing each Batch.Position with the batch's effects and
// passing the last one as Config.Start: the consumer then seeks there and
// passes over it. Ack moves the durable subscription, which keeps the
// broker's retention from deleting what is not processed yet and is what
// `pgtandem cursor status` shows; a consumer that only acks and stores no
// position is at-least-once, like a plain Pulsar consumer, and after a hop
// a restart of it replays the new topic from the cut.
//
// A Consumer is not safe for concurrent use.
type Consumer struct {
	cfg     Config
	log     *slog.Logger
	decoder *event.Decoder

	cluster string
	topic   string
	cons    pulsar.Consumer
	// last is the newest message delivered or passed over on this topic:
	// redeliveries at or before it are dropped. prev is its pulsar id,
	// what the next batch acknowledges up to.
	last ID
	prev pulsar.MessageID
	// seek is set after a seek: the first message must be it, else
	// retention deleted it. hop is the switch the seek goes through.
	seek *ID
	hop  *Mark
	// left is the topic the last hop left, still attached so that it is
	// acknowledged up to its hop row (not the row itself: a restart that
	// comes back to it must read the row again) only once the application
	// acknowledged a batch of the new topic.
	left *leftTopic
	// err is the error that ended the stream: Next returns it again.
	err error
}

type leftTopic struct {
	cluster string
	cons    pulsar.Consumer
	ackID   pulsar.MessageID // nil: nothing to acknowledge
}

// errClosed is what Next returns after Close.
var errClosed = errors.New("cursor: the consumer is closed")

// New subscribes to the start cluster's topic and, for a stored position,
// seeks there.
func New(ctx context.Context, cfg Config) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg, log: cfg.Log, decoder: event.NewDecoder()}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var at *ID
	if cfg.Start.MessageID != "" {
		id, _ := ParseID(cfg.Start.MessageID)
		at = &id
	}
	if err := c.open(ctx, cfg.Start.Cluster, at); err != nil {
		return nil, err
	}
	return c, nil
}

// open subscribes to cluster's topic and, when at is set, seeks to it.
func (c *Consumer) open(ctx context.Context, cluster string, at *ID) error {
	topic := c.cfg.Topics[cluster]
	cons, err := c.cfg.Client.Subscribe(pulsar.ConsumerOptions{
		Topic:                       topic,
		SubscriptionName:            c.cfg.Subscription,
		Type:                        pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
	})
	if err != nil {
		return fmt.Errorf("subscribe %s to %s: %w", c.cfg.Subscription, topic, err)
	}
	if at != nil {
		// The seek is inclusive, on Apache Pulsar as on pgtandem's broker:
		// the message sought is delivered first, which proves it is still
		// there.
		if err := cons.Seek(at.Pulsar()); err != nil {
			cons.Close()
			return fmt.Errorf("seek %s on %s to %s: %w", c.cfg.Subscription, topic, at, err)
		}
	}
	if err := ctx.Err(); err != nil {
		cons.Close()
		return err
	}
	c.cluster, c.topic, c.cons, c.last, c.prev, c.seek = cluster, topic, cons, ID{}, nil, at
	return nil
}

// Cluster is the cluster whose topic the consumer reads now.
func (c *Consumer) Cluster() string { return c.cluster }

// Next returns the next batch of the stream, waiting for one. An error
// other than the context's is final: Next returns it again and delivers
// nothing after it. Final errors are a *LostError, *DecodeError,
// *MarkError, a *ConfigError for a hop to a cluster Topics does not name,
// or a failure to subscribe at a hop.
func (c *Consumer) Next(ctx context.Context) (*Batch, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.cons == nil {
		return nil, errClosed
	}
	b, err := c.next(ctx)
	if err != nil && ctx.Err() == nil {
		c.err = err
	}
	return b, err
}

func (c *Consumer) next(ctx context.Context) (*Batch, error) {
	for {
		msg, err := c.cons.Receive(ctx)
		if err != nil {
			return nil, fmt.Errorf("receive from %s: %w", c.topic, err)
		}
		id := IDOf(msg.ID())
		if c.seek != nil {
			want := *c.seek
			switch {
			case want.After(id) && !want.SameEntry(id): // queued before the seek took effect
				continue
			case id.After(want) && !want.SameEntry(id):
				return nil, lostAt(c.topic, want, msg, c.hop)
			}
			// The entry sought is there. Its messages up to the one sought
			// (the stored position, processed already, or the cut frame,
			// which holds only the cut row) are passed over below; a
			// client may also have dropped them itself.
			c.seek, c.hop, c.last = nil, nil, want
			if !id.After(want) {
				c.prev = msg.ID()
			}
		}
		if !id.After(c.last) {
			continue
		}
		ackID := c.prev
		c.last, c.prev = id, msg.ID()
		f, err := c.decoder.Decode(msg.Payload())
		if err != nil {
			return nil, &DecodeError{Topic: c.topic, ID: id, Err: err}
		}
		changes := f.Changes
		var hop *Mark
		if slices.ContainsFunc(changes, IsOwn) {
			kept := make([]*event.Event, 0, len(changes))
			for _, ev := range changes {
				m, ok, err := MarkOf(ev)
				if err != nil {
					return nil, err
				}
				if ok && m.Kind == Hop && m.From == c.cluster {
					hop = m
				}
				if c.cfg.IncludeOwn || !IsOwn(ev) {
					kept = append(kept, ev)
				}
			}
			changes = kept
		}
		if hop != nil {
			if err := c.hopTo(ctx, hop, ackID); err != nil {
				return nil, err
			}
			continue
		}
		if len(changes) == 0 {
			continue
		}
		return &Batch{Position: Position{Cluster: c.cluster, MessageID: id.String()}, Topic: c.topic, Header: f.Header, Changes: changes, ackID: ackID}, nil
	}
}

// hopTo leaves the current topic at a hop row and continues in the
// switch's target topic after its cut. ackID is the message before the
// hop row, what the topic left is acknowledged up to.
func (c *Consumer) hopTo(ctx context.Context, hop *Mark, ackID pulsar.MessageID) error {
	if c.cfg.Topics[hop.To] == "" {
		return &ConfigError{Field: "Topics", Reason: fmt.Sprintf("switch %s moved the writes from %s to %s, and Topics names no topic for %s", hop.SwitchID, hop.From, hop.To, hop.To)}
	}
	if c.cfg.Topics[hop.To] == c.topic {
		return &ConfigError{Field: "Topics", Reason: fmt.Sprintf("clusters %s and %s share topic %s", hop.From, hop.To, c.topic)}
	}
	cut, _ := ParseID(hop.ToMessageID) // MarkOf checked it
	if c.left != nil {
		// A second hop before the application acknowledged anything of
		// the topic in between: that topic stays as it was acknowledged.
		c.left.cons.Close()
		c.left = nil
	}
	left := &leftTopic{cluster: c.cluster, cons: c.cons, ackID: ackID}
	c.hop = hop
	if err := c.open(ctx, hop.To, &cut); err != nil {
		left.cons.Close()
		c.cons = nil
		return fmt.Errorf("hop at switch %s from %s to %s: %w", hop.SwitchID, hop.From, hop.To, err)
	}
	c.left = left
	c.log.Info("cursor: hop at a switch", "switch", hop.SwitchID, "from", hop.From, "to", hop.To, "topic", c.topic, "cut", cut.String())
	if c.cfg.OnHop != nil {
		c.cfg.OnHop(hop)
	}
	return nil
}

// Ack acknowledges, on b's topic, every message before b: b itself stays
// unacknowledged until the next Ack, so that retention keeps it for a
// restart from b's Position (which the consumer seeks to and must find).
// Acks are cumulative: acknowledging a batch acknowledges those before it.
// The first Ack on a topic entered by a hop also acknowledges the topic
// left, up to (not including) its hop row. Acking a batch of a topic left
// once that is done is a no-op.
func (c *Consumer) Ack(b *Batch) error {
	if b.Position.Cluster != c.cluster {
		if c.left != nil && b.Position.Cluster == c.left.cluster && b.ackID != nil {
			return c.left.cons.AckIDCumulative(b.ackID)
		}
		return nil
	}
	if b.ackID != nil {
		if err := c.cons.AckIDCumulative(b.ackID); err != nil {
			return fmt.Errorf("ack before %s on %s: %w", b.Position, c.topic, err)
		}
	}
	if c.left != nil {
		var err error
		if c.left.ackID != nil {
			err = c.left.cons.AckIDCumulative(c.left.ackID)
		}
		c.left.cons.Close()
		c.left = nil
		if err != nil {
			return fmt.Errorf("ack the topic left up to its hop row: %w", err)
		}
	}
	return nil
}

// Close closes the subscriptions (not the client); acknowledgments sent
// so far are flushed. Next returns an error after it.
func (c *Consumer) Close() {
	if c.left != nil {
		c.left.cons.Close()
		c.left = nil
	}
	if c.cons != nil {
		c.cons.Close()
		c.cons = nil
	}
}
