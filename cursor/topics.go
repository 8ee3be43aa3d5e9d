package cursor

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// FindCut reads the target's topic from cut.ToAfterMessageID until the
// frame of the Cut row and returns the Hop row that points there. It waits
// for the frame until ctx ends: the target's capture publishes it.
func FindCut(ctx context.Context, client pulsar.Client, cut *Mark) (*Mark, error) {
	start := pulsar.EarliestMessageID()
	if cut.ToAfterMessageID != "" {
		id, err := ParseID(cut.ToAfterMessageID)
		if err != nil {
			return nil, err
		}
		start = id.Pulsar()
	}
	// Inclusive: an id stored without its batch index names the whole
	// entry, and the cut frame could be a later message of that batch.
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: cut.ToTopic, StartMessageID: start, StartMessageIDInclusive: true})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", cut.ToTopic, err)
	}
	defer reader.Close()
	decoder := event.NewDecoder()
	for {
		msg, err := reader.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("look for the cut row of switch %s in %s: %w", cut.SwitchID, cut.ToTopic, err)
		}
		f, err := decoder.Decode(msg.Payload())
		if err != nil {
			return nil, &DecodeError{Topic: cut.ToTopic, ID: IDOf(msg.ID()), Err: err}
		}
		for _, ev := range f.Changes {
			m, ok, err := MarkOf(ev)
			if err != nil {
				return nil, err
			}
			if ok && m.Kind == Cut && m.SwitchID == cut.SwitchID {
				hop := *cut
				hop.Kind = Hop
				hop.ToMessageID = IDOf(msg.ID()).String()
				hop.ToCommitLSN, hop.ToCommitTime = f.LSN, f.CommitTime
				return &hop, nil
			}
		}
	}
}

// isOwnSubscription tells whether a subscription of a switch's topics is
// pgtandem's: broker2pg's pgtandem-<target> of either direction, which
// follows its own topic and never hops.
func isOwnSubscription(name string, m *Mark) bool {
	return name == catalog.SubscriptionName(m.From) || name == catalog.SubscriptionName(m.To)
}

// Prepared is one subscription `pgtandem cursor prepare` handled.
type Prepared struct {
	Subscription string `json:"subscription"`
	// Created is false for a subscription the target's topic had already.
	Created bool `json:"created"`
}

// Prepare creates on the target's topic of a switch (a Hop row), for every
// durable subscription of the source's topic that is not pgtandem's, or
// only those named in only when it is not empty, a subscription of the
// same name positioned at the cut: a consumer that hops late still finds
// every change written on the target since the cut, whatever the broker's
// retention. Subscriptions already there are left as they are. It returns
// a *LostError when retention deleted the cut frame already, and a
// *NoSubscriptionError for a name of only the source's topic lacks.
func Prepare(ctx context.Context, admin pulsaradmin.Client, client pulsar.Client, hop *Mark, only []string) ([]Prepared, error) {
	from, err := durableSubscriptions(ctx, admin, hop.FromTopic)
	if err != nil {
		return nil, err
	}
	to, err := durableSubscriptions(ctx, admin, hop.ToTopic)
	if err != nil {
		return nil, err
	}
	cut, err := ParseID(hop.ToMessageID)
	if err != nil {
		return nil, err
	}
	if err := checkPresent(ctx, client, hop.ToTopic, cut, hop); err != nil {
		return nil, err
	}
	toName, err := adminTopic(hop.ToTopic)
	if err != nil {
		return nil, err
	}
	for _, name := range only {
		if !slices.Contains(from, name) {
			return nil, &NoSubscriptionError{Topic: hop.FromTopic, Subscription: name}
		}
	}
	var out []Prepared
	for _, sub := range from {
		if isOwnSubscription(sub, hop) || len(only) > 0 && !slices.Contains(only, sub) {
			continue
		}
		if slices.Contains(to, sub) {
			out = append(out, Prepared{Subscription: sub})
			continue
		}
		// Created at the cut frame, which the consumer's seek delivers
		// first and passes over.
		at := utils.MessageID{LedgerID: cut.FirstLedger, EntryID: cut.FirstEntry, PartitionIndex: -1, BatchIndex: -1}
		if err := admin.Subscriptions().CreateWithContext(ctx, toName, sub, at); err != nil {
			return out, fmt.Errorf("create subscription %s on %s at %s: %w", sub, hop.ToTopic, cut, err)
		}
		out = append(out, Prepared{Subscription: sub, Created: true})
	}
	return out, nil
}

// NoSubscriptionError names a subscription to prepare that the source's
// topic does not have.
type NoSubscriptionError struct {
	Topic, Subscription string
}

func (e *NoSubscriptionError) Error() string {
	return fmt.Sprintf("%s has no durable subscription %q to prepare", e.Topic, e.Subscription)
}

// checkPresent returns a *LostError unless id is still in topic.
func checkPresent(ctx context.Context, client pulsar.Client, topic string, id ID, hop *Mark) error {
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: topic, StartMessageID: id.Pulsar(), StartMessageIDInclusive: true})
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer reader.Close()
	// The cut frame, if it is there, is a message the reader has: without
	// one, retention deleted it and nothing came after.
	if !reader.HasNext() {
		return &LostError{Topic: topic, Want: id, Hop: hop}
	}
	msg, err := reader.Next(ctx)
	if err != nil {
		return fmt.Errorf("read %s at %s: %w", topic, id, err)
	}
	if got := IDOf(msg.ID()); got.After(id) && !got.SameEntry(id) {
		return lostAt(topic, id, msg, hop)
	}
	return nil
}

// adminTopic is topic as the admin API names it.
func adminTopic(topic string) (utils.TopicName, error) {
	name, err := utils.GetTopicName(topic)
	if err != nil {
		return utils.TopicName{}, fmt.Errorf("topic %s: %w", topic, err)
	}
	return *name, nil
}

func durableSubscriptions(ctx context.Context, admin pulsaradmin.Client, topic string) ([]string, error) {
	name, err := adminTopic(topic)
	if err != nil {
		return nil, err
	}
	stats, err := admin.Topics().GetStatsWithContext(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", topic, err)
	}
	var out []string
	for sub, st := range stats.Subscriptions {
		if st.IsDurable {
			out = append(out, sub)
		}
	}
	slices.Sort(out)
	return out, nil
}

// SubscriptionStatus is where one subscription stands at a switch.
type SubscriptionStatus struct {
	Subscription string `json:"subscription"`
	// BeforeCut counts the entries of the source's topic (a batch of
	// frames is one entry) the subscription has not acknowledged up to the
	// switch's marker, the last frame before the cut; 0 once a consumer of
	// package cursor has hopped and acknowledged a batch after the cut.
	BeforeCut int64 `json:"before_cut"`
	// Prepared tells whether the subscription exists on the target's
	// topic; Backlog is its backlog there, in messages.
	Prepared bool  `json:"prepared"`
	Backlog  int64 `json:"backlog"`
	// Passed is set once the subscription acknowledged the cut's entry on
	// the target's topic: the consumer hopped and acknowledged a batch
	// after the cut.
	Passed bool `json:"passed"`
}

// Status tells, for every durable subscription of a switch's source topic
// that is not pgtandem's, how far it is from the cut and whether it has
// hopped.
func Status(ctx context.Context, admin pulsaradmin.Client, hop *Mark) ([]SubscriptionStatus, error) {
	fromName, err := adminTopic(hop.FromTopic)
	if err != nil {
		return nil, err
	}
	toName, err := adminTopic(hop.ToTopic)
	if err != nil {
		return nil, err
	}
	marker, err := ParseID(hop.FromMessageID)
	if err != nil {
		return nil, err
	}
	cut, err := ParseID(hop.ToMessageID)
	if err != nil {
		return nil, err
	}
	fromInternal, err := admin.Topics().GetInternalStatsWithContext(ctx, fromName)
	if err != nil {
		return nil, fmt.Errorf("internal stats of %s: %w", hop.FromTopic, err)
	}
	fromStats, err := admin.Topics().GetStatsWithContext(ctx, fromName)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", hop.FromTopic, err)
	}
	toInternal, err := admin.Topics().GetInternalStatsWithContext(ctx, toName)
	if err != nil {
		return nil, fmt.Errorf("internal stats of %s: %w", hop.ToTopic, err)
	}
	toStats, err := admin.Topics().GetStatsWithContext(ctx, toName)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", hop.ToTopic, err)
	}
	var out []SubscriptionStatus
	for sub, st := range fromStats.Subscriptions {
		if !st.IsDurable || isOwnSubscription(sub, hop) {
			continue
		}
		s := SubscriptionStatus{Subscription: sub}
		if c, ok := fromInternal.Cursors[sub]; ok {
			if md, ok := parsePosition(c.MarkDeletePosition); ok {
				s.BeforeCut = entriesBetween(fromInternal.Ledgers, md, marker)
			}
		}
		if tst, ok := toStats.Subscriptions[sub]; ok {
			s.Prepared, s.Backlog = true, tst.MsgBacklog
			if c, ok := toInternal.Cursors[sub]; ok {
				if md, ok := parsePosition(c.MarkDeletePosition); ok {
					s.Passed = md.SameEntry(cut) || md.After(cut)
				}
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b SubscriptionStatus) int { return strings.Compare(a.Subscription, b.Subscription) })
	return out, nil
}

// parsePosition reads a cursor position, "ledger:entry".
func parsePosition(s string) (ID, bool) {
	l, e, ok := strings.Cut(s, ":")
	if !ok {
		return ID{}, false
	}
	ledger, err1 := strconv.ParseInt(l, 10, 64)
	entry, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil {
		return ID{}, false
	}
	return ID{Ledger: ledger, Entry: entry, BatchIndex: -1, FirstLedger: ledger, FirstEntry: entry}, true
}

// entriesBetween counts the entries after from up to and including to,
// over the topic's ledgers (oldest first).
func entriesBetween(ledgers []utils.LedgerInfo, from, to ID) int64 {
	if !to.After(from) {
		return 0
	}
	var n int64
	for _, l := range ledgers {
		if l.LedgerID < from.Ledger || l.LedgerID > to.Ledger {
			continue
		}
		first, last := int64(0), l.Entries-1
		if l.LedgerID == from.Ledger {
			first = from.Entry + 1
		}
		if l.LedgerID == to.Ledger {
			last = to.Entry
		}
		if last >= first {
			n += last - first + 1
		}
	}
	return n
}
