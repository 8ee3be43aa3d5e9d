package cursor_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pgtandem/pgtandem/cursor"
	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// topicWriter publishes frames into one topic as a capture would: one per
// transaction, several of them batched into one entry by send.
type topicWriter struct {
	t      *testing.T
	topic  string
	prod   pulsar.Producer
	framer *event.Framer
	lsn    event.LSN
}

func newWriter(t *testing.T, client pulsar.Client, topic string) *topicWriter {
	prod, err := client.CreateProducer(pulsar.ProducerOptions{Topic: topic, BatchingMaxPublishDelay: time.Hour, BatchingMaxMessages: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return &topicWriter{t: t, topic: topic, prod: prod, framer: event.NewFramer("1", 100, 1<<20), lsn: 0x1000000}
}

func col(name string) event.Column { return event.Column{Name: name, Type: "text"} }

func str(s string) *string { return &s }

// row is an insert of id into public.t.
func row(id int) *event.Event {
	return &event.Event{Kind: event.KindInsert, Schema: "public", Table: "t", ReplicaIdentity: "d", Columns: []event.Column{col("id")},
		New: map[string]*string{"id": str(strconv.Itoa(id))}}
}

// markRow is the insert of a cursor row.
func markRow(m cursor.Mark) *event.Event {
	cols := []string{"switch_id", "kind", "from_cluster", "to_cluster", "from_topic", "from_message_id", "from_commit_lsn",
		"from_commit_time", "to_topic", "to_after_message_id", "to_message_id", "to_commit_lsn", "to_commit_time"}
	vals := []string{m.SwitchID, string(m.Kind), m.From, m.To, m.FromTopic, m.FromMessageID, "0/1", "2026-12-01 03:00:00+00",
		m.ToTopic, "", m.ToMessageID, "0/2", "2026-12-01 03:00:01+00"}
	ev := &event.Event{Kind: event.KindInsert, Schema: "pgtandem", Table: cursor.Table, ReplicaIdentity: "d", New: map[string]*string{}}
	for i, c := range cols {
		ev.Columns = append(ev.Columns, col(c))
		if vals[i] != "" {
			ev.New[c] = str(vals[i])
		}
	}
	return ev
}

// send queues one transaction of changes; flush sends what is queued as
// one batch and returns each transaction's message id.
func (w *topicWriter) send(changes ...*event.Event) <-chan string {
	w.t.Helper()
	w.lsn += 0x100
	done := make(chan string, 1)
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	evs := []*event.Event{{Kind: event.KindBegin, LSN: w.lsn, Xid: 7, CommitTime: at}}
	for i, ch := range changes {
		ch.LSN, ch.Xid, ch.CommitTime, ch.Seq = w.lsn, 7, at, i+1
		evs = append(evs, ch)
	}
	evs = append(evs, &event.Event{Kind: event.KindCommit, LSN: w.lsn, EndLSN: w.lsn + 1, Xid: 7, CommitTime: at})
	for _, ev := range evs {
		enc, err := w.framer.Add(ev)
		if err != nil {
			w.t.Fatal(err)
		}
		if enc == nil {
			continue
		}
		w.prod.SendAsync(context.Background(), &pulsar.ProducerMessage{Payload: enc.Payload}, func(id pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
			if err != nil {
				w.t.Error(err)
			}
			done <- cursor.IDOf(id).String()
		})
	}
	return done
}

func (w *topicWriter) flush() {
	w.t.Helper()
	if err := w.prod.Flush(); err != nil {
		w.t.Fatal(err)
	}
}

// rows sends one transaction per id, batched together, and returns the
// last one's message id.
func (w *topicWriter) rows(ids ...int) string {
	var last <-chan string
	for _, id := range ids {
		last = w.send(row(id))
	}
	w.flush()
	return <-last
}

// cut sends a cut row alone and returns its message id.
func (w *topicWriter) cut(switchID string) string {
	c := w.send(markRow(cursor.Mark{SwitchID: switchID, Kind: cursor.Cut, From: "x", To: "y", FromTopic: "a", ToTopic: w.topic, FromMessageID: "1:0:-1"}))
	w.flush()
	return <-c
}

// hop sends a hop row from cluster from to cluster to at the cut.
func (w *topicWriter) hop(switchID, from, to, toTopic, cut string) {
	w.send(markRow(cursor.Mark{SwitchID: switchID, Kind: cursor.Hop, From: from, To: to, FromTopic: w.topic, ToTopic: toTopic,
		FromMessageID: "1:0:-1", ToMessageID: cut}))
	w.flush()
}

// stream is a switch and a rollback: 1-3 on old, 4-6 on new, 7-8 on old,
// each run batched, the hop rows batched with the rows before them.
type stream struct {
	broker   *brokertest.Broker
	client   pulsar.Client
	topics   map[string]string
	old, new *topicWriter
}

func newStream(t *testing.T, opts ...brokertest.Option) *stream {
	b := brokertest.Start(t, opts...)
	client, err := pulsarclient.New(pulsarclient.Options{URL: b.URL(), Log: brokertest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	name := "persistent://public/default/" + t.Name()
	s := &stream{broker: b, client: client, topics: map[string]string{"old": name + "-pg15", "new": name + "-pg17"}}
	s.old, s.new = newWriter(t, client, s.topics["old"]), newWriter(t, client, s.topics["new"])
	return s
}

func (s *stream) switchAndRollback() {
	s.old.rows(1, 2, 3)
	cut1 := s.new.cut("s1")
	s.new.rows(4, 5, 6)
	s.old.hop("s1", "old", "new", s.topics["new"], cut1)
	cut2 := s.old.cut("s2")
	s.old.rows(7, 8)
	s.new.hop("s2", "new", "old", s.topics["old"], cut2)
}

// read takes n batches and returns them.
func read(t *testing.T, c *cursor.Consumer, n int, ack bool) []*cursor.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*cursor.Batch
	for len(out) < n {
		b, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("after %d batches: %v", len(out), err)
		}
		if ack {
			if err := c.Ack(b); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, b)
	}
	return out
}

// ids are the batches' rows as "cluster:id".
func ids(bs []*cursor.Batch) []string {
	var out []string
	for _, b := range bs {
		for _, ev := range b.Changes {
			out = append(out, b.Position.Cluster+":"+*ev.New["id"])
		}
	}
	return out
}

var wantStream = []string{"old:1", "old:2", "old:3", "new:4", "new:5", "new:6", "old:7", "old:8"}

func consumer(t *testing.T, s *stream, sub string, start cursor.Position) *cursor.Consumer {
	t.Helper()
	c, err := cursor.New(context.Background(), cursor.Config{Client: s.client, Topics: s.topics, Subscription: sub, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestConsumerHops: the stream through a switch and a rollback, then
// restarted from every position it stored, as an application killed after
// any batch: each run sees exactly the rest, whether the position is
// before a hop, inside a batch or on the other topic.
func TestConsumerHops(t *testing.T) {
	s := newStream(t)
	s.switchAndRollback()
	var hops []string
	c, err := cursor.New(context.Background(), cursor.Config{Client: s.client, Topics: s.topics, Subscription: "all",
		Start: cursor.Position{Cluster: "old"}, OnHop: func(m *cursor.Mark) { hops = append(hops, m.SwitchID) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	all := read(t, c, len(wantStream), true)
	if got := ids(all); !slices.Equal(got, wantStream) || !slices.Equal(hops, []string{"s1", "s2"}) {
		t.Fatalf("read %v with hops %v, want %v and hops [s1 s2]", got, hops, wantStream)
	}
	for k := 1; k < len(all); k++ {
		start := all[k-1].Position
		c := consumer(t, s, "from-"+strconv.Itoa(k), start)
		rest := read(t, c, len(all)-k, true)
		c.Close()
		if got := ids(rest); !slices.Equal(got, wantStream[k:]) {
			t.Fatalf("restarted at %s: read %v, want %v", start, got, wantStream[k:])
		}
	}
}

// TestConsumerWithoutPositions: a consumer that stores no position and
// only acks restarts on its start cluster; past a hop it hops again and
// reads the new topic again from the cut: at least once, never stuck.
func TestConsumerWithoutPositions(t *testing.T) {
	s := newStream(t)
	s.switchAndRollback()
	c := consumer(t, s, "plain", cursor.Position{Cluster: "old"})
	first := read(t, c, 4, true)
	if got := ids(first); !slices.Equal(got, wantStream[:4]) {
		t.Fatalf("read %v", got)
	}
	c.Close()
	c = consumer(t, s, "plain", cursor.Position{Cluster: "old"})
	again := read(t, c, 5, true)
	if got, want := ids(again), wantStream[3:]; !slices.Equal(got, want) {
		t.Fatalf("after a restart without a position: %v, want %v (new:4 again: it was not acknowledged)", got, want)
	}
}

// TestConsumerRestartAfterRetention: the messages a consumer acknowledged
// may be deleted; the one at its stored position is not, since Ack leaves
// it unacknowledged, so a restart from it works.
func TestConsumerRestartAfterRetention(t *testing.T) {
	s := newStream(t, brokertest.WithConfig(func(c *devbroker.Config) {
		c.SegmentSize, c.RetentionTime, c.RetentionInterval = 2<<10, time.Millisecond, 50*time.Millisecond
	}))
	// Subscribed first: retention deletes what no subscription holds.
	c := consumer(t, s, "app", cursor.Position{Cluster: "old"})
	for i := 1; i < 40; i++ {
		s.old.rows(i)
	}
	// 40 is larger than a segment: the next row starts a new one, and 40's
	// segment is all acknowledged but 40 itself.
	big := row(40)
	big.Columns = append(big.Columns, col("pad"))
	big.New["pad"] = str(string(make([]byte, 3<<10)))
	s.old.send(big)
	s.old.flush()
	got := read(t, c, 40, true)
	c.Close()
	stored := got[len(got)-1].Position
	at, _ := cursor.ParseID(stored.MessageID)
	// Later segments, which the subscription holds: the stored position's
	// is not the newest any more, which retention always keeps.
	for i := 41; i <= 80; i++ {
		s.old.rows(i)
	}
	admin, err := pulsarclient.NewAdmin(s.broker.AdminURL(), "", pulsarclient.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	name, _ := utils.GetTopicName(s.topics["old"])
	testwait.For(t, 10*time.Second, "retention to delete the segments before the stored position's", func() error {
		st, err := admin.Topics().GetInternalStats(*name)
		if err != nil {
			return err
		}
		if st.Ledgers[0].LedgerID < at.Ledger {
			return fmt.Errorf("oldest segment %d, the stored position is in %d", st.Ledgers[0].LedgerID, at.Ledger)
		}
		return nil
	})
	if got := ids(read(t, consumer(t, s, "app", stored), 1, true)); !slices.Equal(got, []string{"old:41"}) {
		t.Fatalf("restarted from %s after retention: %v", stored, got)
	}
}

// TestConsumerHopFailureIsFinal: a hop that cannot subscribe to the new
// topic stops the consumer; it does not go on reading the old topic.
func TestConsumerHopFailureIsFinal(t *testing.T) {
	s := newStream(t)
	s.switchAndRollback()
	busy, err := s.client.Subscribe(pulsar.ConsumerOptions{Topic: s.topics["new"], SubscriptionName: "app", Type: pulsar.Exclusive})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	c := consumer(t, s, "app", cursor.Position{Cluster: "old"})
	read(t, c, 3, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := c.Next(ctx)
	if err == nil {
		t.Fatalf("hop into a busy subscription: got %v", ids([]*cursor.Batch{b}))
	}
	if b, again := c.Next(ctx); again != err {
		t.Fatalf("Next after a failed hop: %v, %v; want the same error again", b, again)
	}
}

// TestConsumerLostPosition: a stored position retention deleted is a
// *cursor.LostError, not a jump.
func TestConsumerLostPosition(t *testing.T) {
	s := newStream(t, brokertest.WithConfig(func(c *devbroker.Config) {
		c.SegmentSize, c.RetentionTime, c.RetentionInterval = 2<<10, time.Millisecond, 50*time.Millisecond
	}))
	c := consumer(t, s, "eager", cursor.Position{Cluster: "old"})
	early := s.old.rows(1)
	for i := 2; i <= 40; i++ {
		s.old.rows(i)
	}
	read(t, c, 40, true)
	c.Close()
	admin, err := pulsarclient.NewAdmin(s.broker.AdminURL(), "", pulsarclient.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	name, _ := utils.GetTopicName(s.topics["old"])
	first, _ := cursor.ParseID(early)
	testwait.For(t, 10*time.Second, "retention to delete the first segment", func() error {
		st, err := admin.Topics().GetInternalStats(*name)
		if err != nil {
			return err
		}
		if st.Ledgers[0].LedgerID <= first.Ledger {
			return fmt.Errorf("oldest segment %d", st.Ledgers[0].LedgerID)
		}
		return nil
	})
	c = consumer(t, s, "eager", cursor.Position{Cluster: "old", MessageID: early})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lost *cursor.LostError
	if _, err := c.Next(ctx); !errors.As(err, &lost) || lost.Want != first || lost.Hop != nil {
		t.Fatalf("restart from a deleted position: %v, want a *cursor.LostError at %s", err, early)
	}
}

// TestPrepareAndStatus: prepare gives every durable subscription of the
// source's topic but broker2pg's its twin at the cut (or only those named),
// and status follows a consumer through the hop.
func TestPrepareAndStatus(t *testing.T) {
	s := newStream(t)
	admin, err := pulsarclient.NewAdmin(s.broker.AdminURL(), "", pulsarclient.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	oldName, _ := utils.GetTopicName(s.topics["old"])
	for _, sub := range []string{"pgtandem-new", "pgtandem-sink", "audit"} {
		if err := admin.Subscriptions().Create(*oldName, sub, utils.Earliest); err != nil {
			t.Fatal(err)
		}
	}
	marker := s.old.rows(1, 2, 3)
	cut := s.new.cut("s1")
	hop := &cursor.Mark{SwitchID: "s1", Kind: cursor.Hop, From: "old", To: "new", FromTopic: s.topics["old"], ToTopic: s.topics["new"],
		FromMessageID: marker, ToMessageID: cut}
	ctx := context.Background()
	var none *cursor.NoSubscriptionError
	if _, err := cursor.Prepare(ctx, admin, s.client, hop, []string{"nope"}); !errors.As(err, &none) {
		t.Fatalf("prepare of a subscription the topic lacks: %v", err)
	}
	got, err := cursor.Prepare(ctx, admin, s.client, hop, []string{"audit"})
	if err != nil || fmt.Sprint(got) != fmt.Sprint([]cursor.Prepared{{Subscription: "audit", Created: true}}) {
		t.Fatalf("prepare audit only: %v, %v", got, err)
	}
	got, err = cursor.Prepare(ctx, admin, s.client, hop, nil)
	want := []cursor.Prepared{{Subscription: "audit"}, {Subscription: "pgtandem-sink", Created: true}}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("prepare: %v, %v; want %v (pgtandem-new is broker2pg's)", got, err, want)
	}
	s.new.rows(4)
	s.old.hop("s1", "old", "new", s.topics["new"], cut)

	status := func() cursor.SubscriptionStatus {
		t.Helper()
		st, err := cursor.Status(ctx, admin, hop)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range st {
			if x.Subscription == "audit" {
				return x
			}
		}
		t.Fatalf("status %+v lacks audit", st)
		return cursor.SubscriptionStatus{}
	}
	// Rows 1 to 3 are one batch, one entry; the twin starts at the cut
	// frame, which it holds with row 4.
	if st := status(); st.BeforeCut != 1 || !st.Prepared || st.Backlog != 2 || st.Passed {
		t.Fatalf("status before reading: %+v; want 1 entry before the cut, prepared, backlog 2, not passed", st)
	}
	c := consumer(t, s, "audit", cursor.Position{Cluster: "old"})
	read(t, c, 4, true)
	// Acks are sent asynchronously: wait for the broker to show them.
	testwait.For(t, 10*time.Second, "status after the hop", func() error {
		if st := status(); st.BeforeCut != 0 || !st.Passed {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
}
