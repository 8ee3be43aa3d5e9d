package devbroker

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/devbroker/store"
	"github.com/pgtandem/pgtandem/devbroker/wire"
)

// cursorSaveInterval is the shortest time between two saves of a cursor for
// acknowledgments that asked for no response. Apache Pulsar persists a
// cursor's mark-delete position at most once a second by default
// (managedLedgerDefaultMarkDeleteRateLimit); saving the cursor file on every
// ack instead cost two fsyncs per message, which on a small machine's disk
// competed with every commit of the databases around it. Acks not saved yet
// are lost in a crash and their messages delivered again, as with Pulsar:
// consumers handle redelivery (broker2pg skips what its stored position
// covers). An ack that asks for a response is saved before the response.
const cursorSaveInterval = 100 * time.Millisecond

// dispatchChunk bounds the records sent per lock hold, so that acks and
// flow commands are not kept waiting behind a long backlog.
const dispatchChunk = 64

// subType is the subscription type of the Pulsar protocol.
type subType = wire.CommandSubscribe_SubType

// consumer is one client consumer attached to a subscription.
type consumer struct {
	id   uint64
	name string
	conn *conn
	sub  *subscription

	// The fields below are guarded by sub.mu.
	permits int64
	flowed  bool // a FLOW arrived, so the client has registered the consumer
	pending map[store.Position]struct{}
}

// subscription is a cursor over a topic plus the consumers reading it, and
// a goroutine that dispatches records to them.
type subscription struct {
	topic   *topic
	name    string
	durable bool

	wakeCh chan struct{}
	saveCh chan struct{} // an acknowledgment waits for the saver
	quit   chan struct{}
	once   sync.Once

	// saveMu orders the writes of the cursor file, so that an older state
	// never overwrites a newer one and a deleted cursor stays deleted.
	saveMu  sync.Mutex
	deleted bool           // guarded by saveMu
	saved   store.Position // mark-delete position last saved; guarded by mu
	dirty   bool           // the cursor changed since it was saved; guarded by mu

	mu         sync.Mutex
	typ        subType
	markDelete store.Position
	acked      map[store.Position]struct{}
	batches    map[store.Position][]int64 // unacknowledged bits of partly acked batches
	readPos    store.Position             // newest record read from the log for dispatch
	redeliver  []store.Position           // sorted; served before new records
	redelivery map[store.Position]uint32  // redelivery counts
	owner      map[store.Position]*consumer
	consumers  []*consumer // in subscription order; the first is active for failover
	nextShared int
	msgOut     int64
}

func newSubscription(t *topic, name string, durable bool, st store.CursorState) *subscription {
	s := &subscription{
		topic:      t,
		name:       name,
		durable:    durable,
		wakeCh:     make(chan struct{}, 1),
		saveCh:     make(chan struct{}, 1),
		quit:       make(chan struct{}),
		redelivery: map[store.Position]uint32{},
		owner:      map[store.Position]*consumer{},
	}
	s.restore(st)
	s.saved = st.MarkDelete
	t.srv.startGoroutine(s.run)
	if durable {
		t.srv.startGoroutine(s.saveLoop)
	}
	return s
}

// restore sets the cursor to st and forgets everything in flight.
func (s *subscription) restore(st store.CursorState) {
	s.markDelete = st.MarkDelete
	s.readPos = st.MarkDelete
	s.acked = map[store.Position]struct{}{}
	for _, p := range st.Acked {
		s.acked[p] = struct{}{}
	}
	s.batches = map[store.Position][]int64{}
	for _, b := range st.Batches {
		s.batches[b.Pos] = b.Remaining
	}
	s.redeliver = nil
	clear(s.redelivery)
	clear(s.owner)
	for _, c := range s.consumers {
		clear(c.pending)
	}
}

// state returns the cursor to persist. Callers hold s.mu or own s.
func (s *subscription) state() store.CursorState {
	st := store.CursorState{MarkDelete: s.markDelete}
	for p := range s.acked {
		st.Acked = append(st.Acked, p)
	}
	for p, bits := range s.batches {
		st.Batches = append(st.Batches, store.BatchAck{Pos: p, Remaining: bits})
	}
	return st
}

// save writes the cursor if it changed since it was last written. Callers
// do not hold s.mu.
func (s *subscription) save() error {
	if !s.durable {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.deleted {
		return nil
	}
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	st := s.state()
	s.dirty = false
	s.mu.Unlock()
	if err := s.topic.cursors.Save(s.name, st); err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		s.topic.srv.log.Error("cannot save subscription cursor", "topic", s.topic.name.String(), "subscription", s.name, "err", err)
		return err
	}
	s.mu.Lock()
	s.saved = st.MarkDelete
	s.mu.Unlock()
	return nil
}

// saveLoop saves the cursor after acknowledgments, at most once per
// cursorSaveInterval, and a last time when the subscription or the broker
// stops (a crash saves nothing, as with Pulsar).
func (s *subscription) saveLoop() {
	defer func() { _ = s.save() }()
	// wait returns false once the subscription or the broker stops.
	wait := func(c <-chan struct{}, d <-chan time.Time) bool {
		select {
		case <-c:
		case <-d:
		case <-s.quit:
			return false
		case <-s.topic.srv.quit:
			return false
		}
		return true
	}
	for wait(s.saveCh, nil) {
		_ = s.save()
		if !wait(nil, time.After(cursorSaveInterval)) {
			return
		}
	}
}

// forgetCursor deletes the saved cursor; no save recreates it.
func (s *subscription) forgetCursor() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.deleted = true
	return s.topic.cursors.Delete(s.name)
}

func (s *subscription) wake() { notify(s.wakeCh) }

// notify signals a goroutine waiting on ch, a channel of capacity 1,
// without blocking: a signal already pending stands for this one too.
func notify(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *subscription) stop() {
	s.once.Do(func() { close(s.quit) })
}

func (s *subscription) run() {
	for {
		select {
		case <-s.wakeCh:
		case <-s.quit:
			return
		case <-s.topic.srv.quit:
			return
		}
		for s.dispatch() {
		}
	}
}

// dispatch sends up to dispatchChunk records and reports whether it may
// have more to send. Frames are queued under s.mu so that nothing sent
// for a consumer can overtake its removal.
func (s *subscription) dispatch() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range dispatchChunk {
		c := s.pickConsumer()
		if c == nil {
			return false
		}
		pos, ok := s.nextPosition()
		if !ok {
			return false
		}
		e, err := s.topic.log.Read(pos)
		if err != nil {
			if !store.IsNotFound(err) {
				s.topic.srv.log.Error("cannot read record for dispatch", "topic", s.topic.name.String(), "subscription", s.name, "err", err)
				return false
			}
			continue // deleted by retention
		}
		c.permits -= int64(max(e.NumMessages, 1))
		c.pending[pos] = struct{}{}
		s.owner[pos] = c
		s.msgOut += int64(max(e.NumMessages, 1))
		msg := &wire.CommandMessage{
			ConsumerId:      proto.Uint64(c.id),
			MessageId:       &wire.MessageIdData{LedgerId: proto.Uint64(uint64(pos.Ledger)), EntryId: proto.Uint64(uint64(pos.Entry))},
			RedeliveryCount: proto.Uint32(s.redelivery[pos]),
			AckSet:          s.batches[pos],
		}
		c.conn.sendPayload(&wire.BaseCommand{Type: wire.BaseCommand_MESSAGE.Enum(), Message: msg}, e.Payload)
	}
	return true
}

// pickConsumer returns the consumer the next record goes to, or nil when
// no consumer may take one now.
func (s *subscription) pickConsumer() *consumer {
	if len(s.consumers) == 0 {
		return nil
	}
	if s.typ != wire.CommandSubscribe_Shared {
		if c := s.consumers[0]; c.permits > 0 {
			return c
		}
		return nil
	}
	for i := range s.consumers {
		c := s.consumers[(s.nextShared+i)%len(s.consumers)]
		if c.permits > 0 {
			s.nextShared = (s.nextShared + i + 1) % len(s.consumers)
			return c
		}
	}
	return nil
}

// nextPosition returns the next record to dispatch: redeliveries first, in
// order, then records not read before.
func (s *subscription) nextPosition() (store.Position, bool) {
	for len(s.redeliver) > 0 {
		p := s.redeliver[0]
		s.redeliver = s.redeliver[1:]
		if !s.isAcked(p) && s.owner[p] == nil {
			return p, true
		}
	}
	for {
		p, ok := s.topic.log.After(s.readPos)
		if !ok {
			return store.Position{}, false
		}
		s.readPos = p
		if !s.isAcked(p) && s.owner[p] == nil {
			return p, true
		}
	}
}

func (s *subscription) isAcked(p store.Position) bool {
	if !s.markDelete.Less(p) {
		return true
	}
	_, ok := s.acked[p]
	return ok
}

// scheduleRedelivery hands p, delivered to c, back for dispatch.
func (s *subscription) scheduleRedelivery(c *consumer, p store.Position) {
	delete(c.pending, p)
	delete(s.owner, p)
	if s.isAcked(p) {
		return
	}
	s.redelivery[p]++
	i := sort.Search(len(s.redeliver), func(i int) bool { return !s.redeliver[i].Less(p) })
	if i < len(s.redeliver) && s.redeliver[i] == p {
		return
	}
	s.redeliver = append(s.redeliver, store.Position{})
	copy(s.redeliver[i+1:], s.redeliver[i:])
	s.redeliver[i] = p
}

// addConsumer attaches c, enforcing the subscription type's rules.
func (s *subscription) addConsumer(c *consumer, typ subType) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.quit:
		return &commandError{code: wire.ServerError_ServiceNotReady, msg: fmt.Sprintf("subscription %q on %s is going away; retry", s.name, s.topic.name)}
	default:
	}
	if len(s.consumers) > 0 {
		switch {
		case s.typ != typ:
			return &commandError{code: consumerBusy, msg: fmt.Sprintf("subscription %q on %s is %v, not %v", s.name, s.topic.name, s.typ, typ)}
		case typ == wire.CommandSubscribe_Exclusive:
			return &commandError{code: consumerBusy, msg: fmt.Sprintf("subscription %q on %s already has its exclusive consumer", s.name, s.topic.name)}
		}
	}
	s.typ = typ
	c.sub = s
	c.pending = map[store.Position]struct{}{}
	s.consumers = append(s.consumers, c)
	return nil
}

// removeConsumer detaches c; what it had not acknowledged is redelivered.
// A non-durable subscription goes away with its last consumer.
func (s *subscription) removeConsumer(c *consumer) {
	s.mu.Lock()
	i := s.indexOf(c)
	if i < 0 {
		s.mu.Unlock()
		return
	}
	for p := range c.pending {
		s.scheduleRedelivery(c, p)
	}
	s.consumers = append(s.consumers[:i], s.consumers[i+1:]...)
	if i == 0 && s.typ == wire.CommandSubscribe_Failover {
		s.notifyActive()
	}
	empty := len(s.consumers) == 0
	s.mu.Unlock()
	s.wake()
	if empty && !s.durable {
		_ = s.topic.removeSubscription(s)
	}
}

func (s *subscription) indexOf(c *consumer) int {
	for i, o := range s.consumers {
		if o == c {
			return i
		}
	}
	return -1
}

// notifyActive tells each failover consumer whether it is the active one.
// Consumers that have not sent FLOW yet learn it with their first FLOW,
// because before that the client may not know their id.
func (s *subscription) notifyActive() {
	for i, c := range s.consumers {
		if c.flowed {
			c.conn.sendActiveChange(c.id, i == 0)
		}
	}
}

func (s *subscription) flow(c *consumer, permits uint32) {
	s.mu.Lock()
	c.permits += int64(permits)
	if !c.flowed {
		c.flowed = true
		if s.typ == wire.CommandSubscribe_Failover {
			c.conn.sendActiveChange(c.id, s.indexOf(c) == 0)
		}
	}
	s.mu.Unlock()
	s.wake()
}

// ack applies an acknowledgment from c; with wait it returns once the
// cursor is saved, else the saver saves it within cursorSaveInterval.
func (s *subscription) ack(c *consumer, cumulative bool, ids []*wire.MessageIdData, wait bool) error {
	s.mu.Lock()
	for _, id := range ids {
		p := positionOf(id)
		if cumulative {
			s.ackCumulative(p, id.GetAckSet())
		} else {
			s.ackIndividual(p, id.GetAckSet())
		}
	}
	s.advanceMarkDelete()
	s.dirty = true
	s.mu.Unlock()
	if wait {
		return s.save()
	}
	notify(s.saveCh)
	return nil
}

func (s *subscription) ackIndividual(p store.Position, ackSet []int64) {
	if s.isAcked(p) {
		return
	}
	if remaining, partial := s.mergeBatchAck(p, ackSet); partial {
		s.batches[p] = remaining
		return
	}
	s.acked[p] = struct{}{}
	s.forget(p)
}

// mergeBatchAck combines an ack_set (bits set = still unacknowledged) with
// what was known and reports whether anything in the batch is left.
func (s *subscription) mergeBatchAck(p store.Position, ackSet []int64) ([]int64, bool) {
	if len(ackSet) == 0 {
		return nil, false
	}
	merged := append([]int64(nil), ackSet...)
	if old, ok := s.batches[p]; ok {
		for i := range merged {
			if i < len(old) {
				merged[i] &= old[i]
			}
		}
	}
	for _, w := range merged {
		if w != 0 {
			return merged, true
		}
	}
	return nil, false
}

func (s *subscription) ackCumulative(p store.Position, ackSet []int64) {
	upTo := p
	if remaining, partial := s.mergeBatchAck(p, ackSet); partial {
		s.batches[p] = remaining
		upTo = p.Before()
	}
	if !s.markDelete.Less(upTo) {
		return
	}
	s.markDelete = upTo
	for q := range s.acked {
		if !upTo.Less(q) {
			delete(s.acked, q)
		}
	}
	for q, c := range s.owner {
		if !upTo.Less(q) {
			delete(c.pending, q)
			s.forget(q)
		}
	}
	for q := range s.batches {
		if !upTo.Less(q) {
			delete(s.batches, q)
		}
	}
}

// forget drops the in-flight bookkeeping of an acknowledged record.
func (s *subscription) forget(p store.Position) {
	if c := s.owner[p]; c != nil {
		delete(c.pending, p)
	}
	delete(s.owner, p)
	delete(s.batches, p)
	delete(s.redelivery, p)
}

// advanceMarkDelete moves the mark-delete position over individually
// acknowledged records that directly follow it.
func (s *subscription) advanceMarkDelete() {
	for len(s.acked) > 0 {
		next, ok := s.topic.log.After(s.markDelete)
		if !ok {
			return
		}
		if _, acked := s.acked[next]; !acked {
			return
		}
		delete(s.acked, next)
		s.markDelete = next
	}
}

// redeliverUnacked hands back the given records delivered to c, or all of
// them when ids is empty.
func (s *subscription) redeliverUnacked(c *consumer, ids []*wire.MessageIdData) {
	s.mu.Lock()
	if len(ids) == 0 {
		for p := range c.pending {
			s.scheduleRedelivery(c, p)
		}
	}
	for _, id := range ids {
		p := positionOf(id)
		if _, ok := c.pending[p]; ok {
			s.scheduleRedelivery(c, p)
		}
	}
	s.mu.Unlock()
	s.wake()
}

// resetTo moves the cursor so that the first record after markDelete is
// delivered next and forgets all acknowledgments after it. It detaches every
// consumer and returns them for [subscription.finishDetach], to be called
// once the caller has answered the request; clients then reconnect, as after
// a seek on Pulsar.
func (s *subscription) resetTo(markDelete store.Position) ([]*consumer, error) {
	s.mu.Lock()
	s.restore(store.CursorState{MarkDelete: markDelete})
	s.dirty = true
	// Retention must keep what the new position reads from the moment it
	// is set, not from when it is saved.
	if markDelete.Less(s.saved) {
		s.saved = markDelete
	}
	detached := s.consumers
	s.consumers = nil
	s.mu.Unlock()
	return detached, s.save()
}

// detachAll detaches every consumer, handing back what they had not
// acknowledged, and returns them for [subscription.finishDetach].
func (s *subscription) detachAll() []*consumer {
	s.mu.Lock()
	defer s.mu.Unlock()
	detached := s.consumers
	for _, c := range detached {
		for p := range c.pending {
			s.scheduleRedelivery(c, p)
		}
	}
	s.consumers = nil
	return detached
}

// finishDetach closes the consumers [subscription.resetTo] detached. A
// non-durable subscription goes away; its reader comes back with a new
// start position.
func (s *subscription) finishDetach(detached []*consumer) {
	for _, c := range detached {
		c.conn.detachConsumer(c)
	}
	if len(detached) > 0 && !s.durable {
		_ = s.topic.removeSubscription(s)
	}
	s.wake()
}

// unsubscribe deletes the subscription on behalf of c, refusing while other
// consumers are attached unless force is set.
func (s *subscription) unsubscribe(c *consumer, force bool) error {
	s.mu.Lock()
	others := make([]*consumer, 0, len(s.consumers))
	for _, o := range s.consumers {
		if o != c {
			others = append(others, o)
		}
	}
	if len(others) > 0 && !force {
		s.mu.Unlock()
		return &commandError{code: wire.ServerError_MetadataError, msg: fmt.Sprintf("subscription %q on %s has %d other consumers connected", s.name, s.topic.name, len(others))}
	}
	s.consumers = nil
	s.mu.Unlock()
	for _, o := range others {
		o.conn.detachConsumer(o)
	}
	return s.topic.removeSubscription(s)
}

func (s *subscription) markDeletePosition() store.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.markDelete
}

// savedMarkDelete is the mark-delete position of the saved cursor: where
// the subscription resumes after a crash, which retention must keep.
func (s *subscription) savedMarkDelete() store.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.durable {
		return s.markDelete
	}
	return s.saved
}

// subscriptionStats is a snapshot for the admin API and CONSUMER_STATS.
type subscriptionStats struct {
	typ                 subType
	markDelete, readPos store.Position
	backlog             int64
	unacked             int64
	msgOut              int64
	acked               []store.Position
	consumers           []consumerStats
}

type consumerStats struct {
	name    string
	permits int64
	unacked int
	address string
}

func (s *subscription) stats() subscriptionStats {
	s.mu.Lock()
	st := subscriptionStats{typ: s.typ, markDelete: s.markDelete, readPos: s.readPos, unacked: int64(len(s.owner)), msgOut: s.msgOut}
	for p := range s.acked {
		st.acked = append(st.acked, p)
	}
	for _, c := range s.consumers {
		st.consumers = append(st.consumers, consumerStats{name: c.name, permits: c.permits, unacked: len(c.pending), address: c.conn.nc.RemoteAddr().String()})
	}
	acked := len(s.acked)
	s.mu.Unlock()
	sort.Slice(st.acked, func(i, j int) bool { return st.acked[i].Less(st.acked[j]) })
	_, msgs := s.topic.log.CountBetween(st.markDelete, s.topic.log.Last())
	st.backlog = max(msgs-int64(acked), 0)
	return st
}

func positionOf(id *wire.MessageIdData) store.Position {
	return store.Position{Ledger: int64(id.GetLedgerId()), Entry: int64(id.GetEntryId())}
}

// startPosition maps a client's start message id for a reader to the
// mark-delete position of its cursor: the record at id is delivered first,
// the client skips it itself when the start is exclusive.
func startPosition(id *wire.MessageIdData, last func() store.Position) store.Position {
	p := positionOf(id)
	switch {
	case p.Ledger < 0:
		return store.Earliest
	case p.Ledger == math.MaxInt64:
		return last()
	}
	return p.Before()
}
