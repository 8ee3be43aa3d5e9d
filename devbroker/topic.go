package devbroker

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtandem/pgtandem/devbroker/store"
)

// topicRegistry holds the open topics, created on first use.
type topicRegistry struct {
	srv *Server
	mu  sync.Mutex
	m   map[string]*topic
}

func newTopicRegistry(s *Server) *topicRegistry {
	return &topicRegistry{srv: s, m: map[string]*topic{}}
}

func (r *topicRegistry) dir(name TopicName) string {
	return filepath.Join(r.srv.cfg.DataDir, "persistent", name.Tenant, name.Namespace, url.PathEscape(name.Local))
}

// openAll opens every topic found in the data directory, so that listings
// show them and their dedup state and cursors are ready.
func (r *topicRegistry) openAll() error {
	dirs, err := filepath.Glob(filepath.Join(r.srv.cfg.DataDir, "persistent", "*", "*", "*"))
	if err != nil {
		return err
	}
	for _, d := range dirs {
		local, err := url.PathUnescape(filepath.Base(d))
		if err != nil {
			continue
		}
		ns := filepath.Dir(d)
		name := TopicName{Tenant: filepath.Base(filepath.Dir(ns)), Namespace: filepath.Base(ns), Local: local}
		if name.validate() != nil {
			continue
		}
		if _, err := r.get(name, true); err != nil {
			return err
		}
	}
	return nil
}

// get returns the topic, opening or (when create is set) creating it.
func (r *topicRegistry) get(name TopicName, create bool) (*topic, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.m[name.String()]; ok {
		return t, nil
	}
	dir := r.dir(name)
	if !create {
		if _, err := os.Stat(dir); err != nil {
			return nil, nil
		}
	}
	t, err := openTopic(r.srv, name, dir)
	if err != nil {
		return nil, err
	}
	r.m[name.String()] = t
	return t, nil
}

// list returns the topics of namespace ("tenant/ns"), sorted.
func (r *topicRegistry) list(namespace string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, t := range r.m {
		if t.name.NamespaceName() == namespace {
			out = append(out, t.name.String())
		}
	}
	sort.Strings(out)
	return out
}

func (r *topicRegistry) all() []*topic {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*topic, 0, len(r.m))
	for _, t := range r.m {
		out = append(out, t)
	}
	return out
}

func (r *topicRegistry) applyRetention() {
	cfg := r.srv.cfg
	for _, t := range r.all() {
		n, err := t.log.Retain(t.consumedByAll(), cfg.RetentionSize, cfg.RetentionTime, time.Now())
		if err != nil {
			r.srv.log.Error("retention failed", "topic", t.name.String(), "err", err)
		} else if n > 0 {
			r.srv.log.Info("retention deleted old segments", "topic", t.name.String(), "segments", n)
		}
	}
}

func (r *topicRegistry) closeAll() error {
	var errs []error
	for _, t := range r.all() {
		errs = append(errs, t.close())
	}
	return errors.Join(errs...)
}

// topic is one persistent topic: its log, producers and subscriptions.
type topic struct {
	srv     *Server
	name    TopicName
	log     *store.Log
	cursors *store.CursorStore
	created time.Time

	msgIn, bytesIn atomic.Int64
	lastPublish    atomic.Int64

	mu        sync.Mutex
	producers map[*producer]struct{}
	subs      map[string]*subscription
}

func openTopic(s *Server, name TopicName, dir string) (*topic, error) {
	t := &topic{srv: s, name: name, created: time.Now(), producers: map[*producer]struct{}{}, subs: map[string]*subscription{}}
	var err error
	t.cursors, err = store.NewCursorStore(filepath.Join(dir, "subscriptions"))
	if err != nil {
		return nil, err
	}
	t.log, err = store.OpenLog(dir, store.LogOptions{
		SegmentSize: s.cfg.SegmentSize,
		Dedup:       s.cfg.Dedup,
		OnAppend:    t.wakeAll,
		Logger:      s.log.With("topic", name.String()),
	})
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", name, err)
	}
	names, err := t.cursors.List()
	if err != nil {
		t.log.Close()
		return nil, err
	}
	for _, n := range names {
		st, err := t.cursors.Load(n)
		if err != nil {
			t.log.Close()
			return nil, fmt.Errorf("open topic %s: %w", name, err)
		}
		t.subs[n] = newSubscription(t, n, true, st)
	}
	return t, nil
}

func (t *topic) wakeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.subs {
		s.wake()
	}
}

// subscription returns the named subscription, creating it at start (the
// mark-delete position of the new cursor) if it does not exist.
func (t *topic) subscription(name string, durable bool, start func() store.Position) (*subscription, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.subs[name]; ok {
		if s.durable != durable {
			return nil, &commandError{code: consumerBusy, msg: fmt.Sprintf("subscription %q on %s exists and is %s", name, t.name, durability(s.durable))}
		}
		return s, nil
	}
	s := newSubscription(t, name, durable, store.CursorState{MarkDelete: start()})
	if durable {
		if err := t.cursors.Save(name, s.state()); err != nil {
			s.stop()
			return nil, err
		}
	}
	t.subs[name] = s
	return s, nil
}

func durability(durable bool) string {
	if durable {
		return "durable"
	}
	return "non-durable"
}

func (t *topic) lookupSubscription(name string) *subscription {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.subs[name]
}

func (t *topic) subscriptions() []*subscription {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*subscription, 0, len(t.subs))
	for _, s := range t.subs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// removeSubscription forgets s, deleting its cursor when durable.
func (t *topic) removeSubscription(s *subscription) error {
	t.mu.Lock()
	if t.subs[s.name] == s {
		delete(t.subs, s.name)
	}
	t.mu.Unlock()
	s.stop()
	if s.durable {
		return s.forgetCursor()
	}
	return nil
}

// consumedByAll returns the position up to which every durable
// subscription has acknowledged everything, as its saved cursor says.
func (t *topic) consumedByAll() store.Position {
	consumed := store.Latest
	for _, s := range t.subscriptions() {
		if !s.durable {
			continue
		}
		if md := s.savedMarkDelete(); md.Less(consumed) {
			consumed = md
		}
	}
	return consumed
}

func (t *topic) addProducer(p *producer, exclusive bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for o := range t.producers {
		if o.name == p.name {
			return &commandError{code: producerBusy, msg: fmt.Sprintf("producer %q is already connected to %s", p.name, t.name)}
		}
		if exclusive || o.exclusive {
			return &commandError{code: producerFenced, msg: fmt.Sprintf("%s has an exclusive producer", t.name)}
		}
	}
	t.producers[p] = struct{}{}
	return nil
}

func (t *topic) removeProducer(p *producer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.producers, p)
}

// unload closes every producer and consumer of the topic from the broker
// side, as Pulsar does when a topic moves; clients reconnect at once, and
// what consumers had not acknowledged is redelivered.
func (t *topic) unload() {
	t.mu.Lock()
	producers := t.producers
	t.producers = map[*producer]struct{}{}
	t.mu.Unlock()
	for p := range producers {
		p.conn.detachProducer(p)
	}
	for _, s := range t.subscriptions() {
		s.finishDetach(s.detachAll())
	}
}

func (t *topic) close() error {
	for _, s := range t.subscriptions() {
		s.stop()
		// Acks handled after the saver's last save, while connections
		// were closing.
		_ = s.save()
	}
	return t.log.Close()
}
