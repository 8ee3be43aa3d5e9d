package devbroker

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/pgtandem/pgtandem/devbroker/store"
)

// The admin API is the subset of Pulsar's /admin/v2 REST API that
// pgtandem's tooling uses, with the same paths and JSON field names, so
// that pulsaradmin and scripts work against this broker and Pulsar alike.

// httpError is an admin failure with its HTTP status.
type httpError struct {
	status int
	reason string
}

func (e *httpError) Error() string { return e.reason }

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	const ns = "/admin/v2/persistent/{tenant}/{namespace}"
	const tp = ns + "/{topic}"
	empty := func(*http.Request) (any, error) { return []string{}, nil }
	mux.HandleFunc("GET "+ns, s.adminJSON(s.adminListTopics))
	mux.HandleFunc("GET "+ns+"/partitioned", s.adminJSON(empty))
	mux.HandleFunc("GET /admin/v2/non-persistent/{tenant}/{namespace}", s.adminJSON(empty))
	mux.HandleFunc("GET /admin/v2/non-persistent/{tenant}/{namespace}/partitioned", s.adminJSON(empty))
	mux.HandleFunc("PUT "+tp, s.adminJSON(s.adminCreateTopic))
	mux.HandleFunc("PUT "+tp+"/partitions", s.adminJSON(func(*http.Request) (any, error) {
		return nil, &httpError{status: http.StatusNotImplemented, reason: "partitioned topics are not supported by the pgtandem broker"}
	}))
	mux.HandleFunc("PUT "+tp+"/unload", s.adminJSON(s.adminUnload))
	mux.HandleFunc("GET "+tp+"/stats", s.adminJSON(s.adminTopicStats))
	mux.HandleFunc("GET "+tp+"/internalStats", s.adminJSON(s.adminInternalStats))
	mux.HandleFunc("GET "+tp+"/subscriptions", s.adminJSON(s.adminListSubscriptions))
	mux.HandleFunc("GET "+tp+"/lastMessageId", s.adminJSON(s.adminLastMessageID))
	mux.HandleFunc("PUT "+tp+"/subscription/{sub}", s.adminJSON(s.adminCreateSubscription))
	mux.HandleFunc("DELETE "+tp+"/subscription/{sub}", s.adminJSON(s.adminDeleteSubscription))
	mux.HandleFunc("POST "+tp+"/subscription/{sub}/resetcursor", s.adminJSON(s.adminResetCursorToID))
	mux.HandleFunc("POST "+tp+"/subscription/{sub}/resetcursor/{timestamp}", s.adminJSON(s.adminResetCursorToTime))
	return s.adminAuth(mux)
}

func (s *Server) adminAuth(next http.Handler) http.Handler {
	if s.token == "" {
		return next
	}
	want := []byte("Bearer " + s.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"reason": "authentication required: send Authorization: Bearer <token>"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminJSON adapts a handler returning a value to encode (nil: 204) or an
// error to the HTTP conventions of Pulsar's admin API.
func (s *Server) adminJSON(h func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h(r)
		if err != nil {
			status := http.StatusInternalServerError
			var he *httpError
			var tn *TopicNameError
			switch {
			case errors.As(err, &he):
				status = he.status
			case errors.As(err, &tn):
				status = http.StatusPreconditionFailed
			default:
				s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeJSON(w, status, map[string]string{"reason": err.Error()})
			return
		}
		if v == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func adminTopicName(r *http.Request) (TopicName, error) {
	return ParseTopicName(persistentScheme + r.PathValue("tenant") + "/" + r.PathValue("namespace") + "/" + r.PathValue("topic"))
}

// adminTopic returns the existing topic the request names.
func (s *Server) adminTopic(r *http.Request) (*topic, error) {
	name, err := adminTopicName(r)
	if err != nil {
		return nil, err
	}
	t, err := s.topics.get(name, false)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, &httpError{status: http.StatusNotFound, reason: fmt.Sprintf("topic %s not found", name)}
	}
	return t, nil
}

func (s *Server) adminSubscription(r *http.Request) (*subscription, error) {
	t, err := s.adminTopic(r)
	if err != nil {
		return nil, err
	}
	sub := t.lookupSubscription(r.PathValue("sub"))
	if sub == nil {
		return nil, &httpError{status: http.StatusNotFound, reason: fmt.Sprintf("subscription %q not found on %s", r.PathValue("sub"), t.name)}
	}
	return sub, nil
}

func (s *Server) adminListTopics(r *http.Request) (any, error) {
	ns := r.PathValue("tenant") + "/" + r.PathValue("namespace")
	topics := s.topics.list(ns)
	if topics == nil {
		topics = []string{}
	}
	return topics, nil
}

func (s *Server) adminCreateTopic(r *http.Request) (any, error) {
	name, err := adminTopicName(r)
	if err != nil {
		return nil, err
	}
	if existing, err := s.topics.get(name, false); err != nil || existing != nil {
		if err == nil {
			err = &httpError{status: http.StatusConflict, reason: fmt.Sprintf("topic %s already exists", name)}
		}
		return nil, err
	}
	_, err = s.topics.get(name, true)
	return nil, err
}

func (s *Server) adminUnload(r *http.Request) (any, error) {
	t, err := s.adminTopic(r)
	if err != nil {
		return nil, err
	}
	t.unload()
	return nil, nil
}

type publisherStatsJSON struct {
	AccessMode   string `json:"accessMode"`
	ProducerID   uint64 `json:"producerId"`
	ProducerName string `json:"producerName"`
	Address      string `json:"address"`
}

type consumerStatsJSON struct {
	ConsumerName     string `json:"consumerName"`
	AvailablePermits int64  `json:"availablePermits"`
	UnackedMessages  int    `json:"unackedMessages"`
	Address          string `json:"address"`
}

type subscriptionStatsJSON struct {
	Type            string              `json:"type"`
	MsgBacklog      int64               `json:"msgBacklog"`
	UnackedMessages int64               `json:"unackedMessages"`
	MsgOutCounter   int64               `json:"msgOutCounter"`
	IsDurable       bool                `json:"isDurable"`
	Consumers       []consumerStatsJSON `json:"consumers"`
}

type topicStatsJSON struct {
	MsgInCounter         int64                            `json:"msgInCounter"`
	BytesInCounter       int64                            `json:"bytesInCounter"`
	MsgOutCounter        int64                            `json:"msgOutCounter"`
	StorageSize          int64                            `json:"storageSize"`
	BacklogSize          int64                            `json:"backlogSize"`
	Publishers           []publisherStatsJSON             `json:"publishers"`
	Subscriptions        map[string]subscriptionStatsJSON `json:"subscriptions"`
	DeduplicationStatus  string                           `json:"deduplicationStatus"`
	TopicCreationTime    int64                            `json:"topicCreationTimeStamp"`
	LastPublishTimestamp int64                            `json:"lastPublishTimestamp"`
}

func (s *Server) adminTopicStats(r *http.Request) (any, error) {
	t, err := s.adminTopic(r)
	if err != nil {
		return nil, err
	}
	ls := t.log.Stats()
	out := topicStatsJSON{
		// msgInCounter counts every message stored, including those stored
		// before the last restart, so that it agrees with what the log holds.
		MsgInCounter:         ls.Messages,
		BytesInCounter:       t.bytesIn.Load(),
		StorageSize:          ls.Bytes,
		Publishers:           []publisherStatsJSON{},
		Subscriptions:        map[string]subscriptionStatsJSON{},
		DeduplicationStatus:  "Disabled",
		TopicCreationTime:    t.created.UnixMilli(),
		LastPublishTimestamp: t.lastPublish.Load(),
	}
	if s.cfg.Dedup {
		out.DeduplicationStatus = "Enabled"
	}
	t.mu.Lock()
	for p := range t.producers {
		mode := "Shared"
		if p.exclusive {
			mode = "Exclusive"
		}
		out.Publishers = append(out.Publishers, publisherStatsJSON{AccessMode: mode, ProducerID: p.id, ProducerName: p.name, Address: p.conn.nc.RemoteAddr().String()})
	}
	t.mu.Unlock()
	for _, sub := range t.subscriptions() {
		st := sub.stats()
		ss := subscriptionStatsJSON{Type: st.typ.String(), MsgBacklog: st.backlog, UnackedMessages: st.unacked, MsgOutCounter: st.msgOut, IsDurable: sub.durable, Consumers: []consumerStatsJSON{}}
		for _, c := range st.consumers {
			ss.Consumers = append(ss.Consumers, consumerStatsJSON{ConsumerName: c.name, AvailablePermits: c.permits, UnackedMessages: c.unacked, Address: c.address})
		}
		out.MsgOutCounter += st.msgOut
		out.Subscriptions[sub.name] = ss
	}
	return out, nil
}

type cursorStatsJSON struct {
	MarkDeletePosition          string `json:"markDeletePosition"`
	ReadPosition                string `json:"readPosition"`
	IndividuallyDeletedMessages string `json:"individuallyDeletedMessages"`
	State                       string `json:"state"`
}

// ledgerInfoJSON is Pulsar's PersistentTopicInternalStats.LedgerInfo.
type ledgerInfoJSON struct {
	LedgerID int64 `json:"ledgerId"`
	Entries  int64 `json:"entries"`
	Size     int64 `json:"size"`
}

type internalStatsJSON struct {
	EntriesAddedCounter  int64                      `json:"entriesAddedCounter"`
	NumberOfEntries      int64                      `json:"numberOfEntries"`
	TotalSize            int64                      `json:"totalSize"`
	CurrentLedgerEntries int64                      `json:"currentLedgerEntries"`
	CurrentLedgerSize    int64                      `json:"currentLedgerSize"`
	LastConfirmedEntry   string                     `json:"lastConfirmedEntry"`
	State                string                     `json:"state"`
	Ledgers              []ledgerInfoJSON           `json:"ledgers"`
	Cursors              map[string]cursorStatsJSON `json:"cursors"`
}

func (s *Server) adminInternalStats(r *http.Request) (any, error) {
	t, err := s.adminTopic(r)
	if err != nil {
		return nil, err
	}
	// One snapshot of the segments, so that the ledgers add up to the
	// totals even while messages are appended.
	ledgers := t.log.Ledgers()
	out := internalStatsJSON{
		LastConfirmedEntry: store.Position{Ledger: ledgers[len(ledgers)-1].ID, Entry: -1}.String(),
		State:              "LedgerOpened",
		Ledgers:            make([]ledgerInfoJSON, len(ledgers)),
		Cursors:            map[string]cursorStatsJSON{},
	}
	for i, l := range ledgers {
		out.Ledgers[i] = ledgerInfoJSON{LedgerID: l.ID, Entries: l.Entries, Size: l.Bytes}
		out.NumberOfEntries += l.Entries
		out.TotalSize += l.Bytes
		if l.Entries > 0 {
			out.LastConfirmedEntry = store.Position{Ledger: l.ID, Entry: l.Entries - 1}.String()
		}
	}
	out.EntriesAddedCounter = out.NumberOfEntries
	out.CurrentLedgerEntries = ledgers[len(ledgers)-1].Entries
	out.CurrentLedgerSize = ledgers[len(ledgers)-1].Bytes
	for _, sub := range t.subscriptions() {
		st := sub.stats()
		acked := make([]string, len(st.acked))
		for i, p := range st.acked {
			acked[i] = "(" + p.Before().String() + ".." + p.String() + "]"
		}
		out.Cursors[sub.name] = cursorStatsJSON{
			MarkDeletePosition:          st.markDelete.String(),
			ReadPosition:                st.readPos.String(),
			IndividuallyDeletedMessages: "[" + strings.Join(acked, ",") + "]",
			State:                       "Open",
		}
	}
	return out, nil
}

func (s *Server) adminListSubscriptions(r *http.Request) (any, error) {
	t, err := s.adminTopic(r)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, sub := range t.subscriptions() {
		names = append(names, sub.name)
	}
	return names, nil
}

type messageIDJSON struct {
	LedgerID       int64 `json:"ledgerId"`
	EntryID        int64 `json:"entryId"`
	PartitionIndex int   `json:"partitionIndex"`
}

func (s *Server) adminLastMessageID(r *http.Request) (any, error) {
	t, err := s.adminTopic(r)
	if err != nil {
		return nil, err
	}
	last := t.log.Last()
	return messageIDJSON{LedgerID: last.Ledger, EntryID: last.Entry, PartitionIndex: -1}, nil
}

// readMessageID decodes a message id body into the mark-delete position
// that delivers that message next. An empty body means latest.
func readMessageID(r *http.Request, t *topic) (store.Position, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		return store.Position{}, err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return t.log.Last(), nil
	}
	var id messageIDJSON
	if err := json.Unmarshal(b, &id); err != nil {
		return store.Position{}, &httpError{status: http.StatusBadRequest, reason: fmt.Sprintf("message id body: %v", err)}
	}
	switch {
	case id.LedgerID < 0:
		return store.Earliest, nil
	case id.LedgerID == math.MaxInt64:
		return t.log.Last(), nil
	}
	return store.Position{Ledger: id.LedgerID, Entry: id.EntryID}.Before(), nil
}

func (s *Server) adminCreateSubscription(r *http.Request) (any, error) {
	t, err := s.adminTopic(r)
	if err != nil {
		return nil, err
	}
	name := r.PathValue("sub")
	if t.lookupSubscription(name) != nil {
		return nil, &httpError{status: http.StatusConflict, reason: fmt.Sprintf("subscription %q already exists on %s", name, t.name)}
	}
	md, err := readMessageID(r, t)
	if err != nil {
		return nil, err
	}
	_, err = t.subscription(name, true, func() store.Position { return md })
	return nil, err
}

func (s *Server) adminDeleteSubscription(r *http.Request) (any, error) {
	sub, err := s.adminSubscription(r)
	if err != nil {
		return nil, err
	}
	if err := sub.unsubscribe(nil, r.URL.Query().Get("force") == "true"); err != nil {
		var ce *commandError
		if errors.As(err, &ce) {
			return nil, &httpError{status: http.StatusPreconditionFailed, reason: ce.msg}
		}
		return nil, err
	}
	return nil, nil
}

func (s *Server) adminResetCursorToID(r *http.Request) (any, error) {
	sub, err := s.adminSubscription(r)
	if err != nil {
		return nil, err
	}
	md, err := readMessageID(r, sub.topic)
	if err != nil {
		return nil, err
	}
	return nil, resetCursor(sub, md)
}

func (s *Server) adminResetCursorToTime(r *http.Request) (any, error) {
	sub, err := s.adminSubscription(r)
	if err != nil {
		return nil, err
	}
	ms, err := strconv.ParseInt(r.PathValue("timestamp"), 10, 64)
	if err != nil {
		return nil, &httpError{status: http.StatusBadRequest, reason: fmt.Sprintf("timestamp %q is not milliseconds since the epoch", r.PathValue("timestamp"))}
	}
	return nil, resetCursor(sub, markDeleteForTime(sub.topic.log, ms))
}

func resetCursor(sub *subscription, md store.Position) error {
	detached, err := sub.resetTo(md)
	sub.finishDetach(detached)
	return err
}
