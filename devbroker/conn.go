package devbroker

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"regexp"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pgtandem/pgtandem/devbroker/store"
	"github.com/pgtandem/pgtandem/devbroker/wire"
)

const (
	serverVersion = "pgtandem-broker"
	// maxProtocolVersion is the newest protocol version this broker speaks
	// (v20, the one pulsar-client-go v0.19 sends).
	maxProtocolVersion = 20
	handshakeTimeout   = 30 * time.Second
	// idleTimeout closes a connection that sent nothing for this long.
	// Clients ping every 30 s by default, so only a vanished client (whose
	// unacknowledged messages must go to another consumer) stays silent.
	idleTimeout = 2 * time.Minute
)

// Short names for the server errors the broker answers with.
const (
	consumerBusy   = wire.ServerError_ConsumerBusy
	producerBusy   = wire.ServerError_ProducerBusy
	producerFenced = wire.ServerError_ProducerFenced
	notAllowed     = wire.ServerError_NotAllowedError
)

// commandError is a failure to report to the client as a protocol error.
type commandError struct {
	code wire.ServerError
	msg  string
}

func (e *commandError) Error() string { return e.code.String() + ": " + e.msg }

// toCommandError maps any error to the protocol error the client gets.
func toCommandError(err error) *commandError {
	var ce *commandError
	var tn *TopicNameError
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &tn):
		return &commandError{code: wire.ServerError_InvalidTopicName, msg: tn.Error()}
	}
	return &commandError{code: wire.ServerError_PersistenceError, msg: err.Error()}
}

// producer is one client producer attached to a topic.
type producer struct {
	id        uint64
	name      string
	topic     *topic
	exclusive bool
	conn      *conn
}

// conn is one client connection. Its read loop (serve) handles commands in
// order; everything sent to the client goes through an unbounded queue
// drained by writeLoop, so that no lock holder ever blocks on the network.
type conn struct {
	srv *Server
	nc  net.Conn
	log *slog.Logger

	outMu     sync.Mutex
	out       [][]byte
	outSignal chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	producers map[uint64]*producer
	consumers map[uint64]*consumer
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		srv:       s,
		nc:        nc,
		log:       s.log.With("remote", nc.RemoteAddr().String()),
		outSignal: make(chan struct{}, 1),
		done:      make(chan struct{}),
		producers: map[uint64]*producer{},
		consumers: map[uint64]*consumer{},
	}
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

func (c *conn) enqueue(frame []byte) {
	c.outMu.Lock()
	c.out = append(c.out, frame)
	c.outMu.Unlock()
	select {
	case c.outSignal <- struct{}{}:
	default:
	}
}

func (c *conn) send(cmd *wire.BaseCommand) {
	c.enqueue(wire.AppendCommand(nil, cmd))
}

func (c *conn) sendPayload(cmd *wire.BaseCommand, payload []byte) {
	c.enqueue(wire.AppendPayloadCommand(nil, cmd, payload))
}

func (c *conn) writeLoop() {
	for {
		select {
		case <-c.outSignal:
		case <-c.done:
			return
		}
		c.outMu.Lock()
		bufs := net.Buffers(c.out)
		c.out = nil
		c.outMu.Unlock()
		if _, err := bufs.WriteTo(c.nc); err != nil {
			c.log.Debug("connection write failed", "err", err)
			c.close()
			return
		}
	}
}

// serve runs the handshake and then handles commands until the connection
// ends; then it detaches the connection's producers and consumers.
func (c *conn) serve() {
	defer c.cleanup()
	defer c.close()
	defer func() {
		// A bug triggered by one client's input must not take down the
		// broker and every other client with it.
		if r := recover(); r != nil {
			c.log.Error("closing connection after a broker bug", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	dec := wire.NewDecoder(c.nc, c.srv.cfg.MaxMessageSize+wire.FramePadding)
	if !c.handshake(dec) {
		return
	}
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(idleTimeout))
		f, err := dec.Next()
		if err != nil {
			c.logReadError(err)
			return
		}
		if !c.handle(f) {
			return
		}
	}
}

func (c *conn) logReadError(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug("connection closed")
	case wire.IsFrameError(err):
		c.log.Warn("closing connection after a bad frame", "err", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Warn("closing silent connection", "idle_timeout", idleTimeout)
	default:
		c.log.Debug("connection read failed", "err", err)
	}
}

func (c *conn) handshake(dec *wire.Decoder) bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	f, err := dec.Next()
	if err != nil {
		c.logReadError(err)
		return false
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	if f.Cmd.GetType() != wire.BaseCommand_CONNECT || f.Cmd.Connect == nil {
		c.log.Warn("closing connection that did not start with CONNECT", "command", f.Cmd.GetType().String())
		c.writeNow(&wire.BaseCommand{Type: wire.BaseCommand_ERROR.Enum(), Error: &wire.CommandError{
			RequestId: proto.Uint64(0), Error: wire.ServerError_UnknownError.Enum(), Message: proto.String("the first command must be CONNECT"),
		}})
		return false
	}
	cmd := f.Cmd.Connect
	if c.srv.token != "" && !c.validToken(cmd) {
		c.log.Warn("authentication failed", "method", cmd.GetAuthMethodName())
		c.writeNow(&wire.BaseCommand{Type: wire.BaseCommand_ERROR.Enum(), Error: &wire.CommandError{
			RequestId: proto.Uint64(0), Error: wire.ServerError_AuthenticationError.Enum(),
			Message: proto.String("authentication failed: a valid token is required (auth method \"token\")"),
		}})
		return false
	}
	version := min(cmd.GetProtocolVersion(), maxProtocolVersion)
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_CONNECTED.Enum(), Connected: &wire.CommandConnected{
		ServerVersion:   proto.String(serverVersion),
		ProtocolVersion: proto.Int32(version),
		MaxMessageSize:  proto.Int32(int32(c.srv.cfg.MaxMessageSize)),
	}})
	c.log.Debug("client connected", "client_version", cmd.GetClientVersion(), "protocol_version", version)
	return true
}

func (c *conn) validToken(cmd *wire.CommandConnect) bool {
	return cmd.GetAuthMethodName() == "token" &&
		subtle.ConstantTimeCompare(cmd.GetAuthData(), []byte(c.srv.token)) == 1
}

// writeNow writes a frame synchronously, for answers that must reach the
// client before the connection is closed.
func (c *conn) writeNow(cmd *wire.BaseCommand) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.nc.Write(wire.AppendCommand(nil, cmd))
}

// hasBody reports whether cmd carries the sub-command its type announces.
// In BaseCommand every sub-command's field number equals its type's value,
// which lets one check replace a nil test in every handler.
func hasBody(cmd *wire.BaseCommand) bool {
	m := cmd.ProtoReflect()
	fd := m.Descriptor().Fields().ByNumber(protoreflect.FieldNumber(cmd.GetType()))
	return fd != nil && m.Has(fd)
}

// handle processes one command and reports whether the connection stays.
func (c *conn) handle(f *wire.Frame) bool {
	cmd := f.Cmd
	switch t := cmd.GetType(); {
	case t == wire.BaseCommand_PING || t == wire.BaseCommand_PONG:
		// Their bodies are empty; some clients leave them out.
	case !hasBody(cmd):
		c.log.Warn("closing connection after a command without its body", "command", t.String())
		return false
	}
	switch cmd.GetType() {
	case wire.BaseCommand_PING:
		c.send(&wire.BaseCommand{Type: wire.BaseCommand_PONG.Enum(), Pong: &wire.CommandPong{}})
	case wire.BaseCommand_PONG:
	case wire.BaseCommand_PARTITIONED_METADATA:
		c.handlePartitionedMetadata(cmd.GetPartitionMetadata())
	case wire.BaseCommand_LOOKUP:
		c.handleLookup(cmd.GetLookupTopic())
	case wire.BaseCommand_GET_TOPICS_OF_NAMESPACE:
		c.handleTopicsOfNamespace(cmd.GetGetTopicsOfNamespace())
	case wire.BaseCommand_PRODUCER:
		c.handleProducer(cmd.GetProducer())
	case wire.BaseCommand_SEND:
		c.handleSend(cmd.GetSend(), f.Payload)
	case wire.BaseCommand_CLOSE_PRODUCER:
		c.handleCloseProducer(cmd.GetCloseProducer())
	case wire.BaseCommand_SUBSCRIBE:
		c.handleSubscribe(cmd.GetSubscribe())
	case wire.BaseCommand_FLOW:
		if cons := c.consumer(cmd.GetFlow().GetConsumerId()); cons != nil {
			cons.sub.flow(cons, cmd.GetFlow().GetMessagePermits())
		}
	case wire.BaseCommand_ACK:
		c.handleAck(cmd.GetAck())
	case wire.BaseCommand_REDELIVER_UNACKNOWLEDGED_MESSAGES:
		r := cmd.GetRedeliverUnacknowledgedMessages()
		if cons := c.consumer(r.GetConsumerId()); cons != nil {
			cons.sub.redeliverUnacked(cons, r.GetMessageIds())
		}
	case wire.BaseCommand_SEEK:
		c.handleSeek(cmd.GetSeek())
	case wire.BaseCommand_GET_LAST_MESSAGE_ID:
		c.handleGetLastMessageID(cmd.GetGetLastMessageId())
	case wire.BaseCommand_UNSUBSCRIBE:
		c.handleUnsubscribe(cmd.GetUnsubscribe())
	case wire.BaseCommand_CLOSE_CONSUMER:
		c.handleCloseConsumer(cmd.GetCloseConsumer())
	case wire.BaseCommand_CONSUMER_STATS:
		c.handleConsumerStats(cmd.GetConsumerStats())
	case wire.BaseCommand_GET_SCHEMA:
		c.send(&wire.BaseCommand{Type: wire.BaseCommand_GET_SCHEMA_RESPONSE.Enum(), GetSchemaResponse: &wire.CommandGetSchemaResponse{
			RequestId: proto.Uint64(cmd.GetGetSchema().GetRequestId()), ErrorCode: wire.ServerError_TopicNotFound.Enum(),
			ErrorMessage: proto.String("the pgtandem broker keeps no schemas"),
		}})
	case wire.BaseCommand_GET_OR_CREATE_SCHEMA:
		c.send(&wire.BaseCommand{Type: wire.BaseCommand_GET_OR_CREATE_SCHEMA_RESPONSE.Enum(), GetOrCreateSchemaResponse: &wire.CommandGetOrCreateSchemaResponse{
			RequestId: proto.Uint64(cmd.GetGetOrCreateSchema().GetRequestId()), ErrorCode: notAllowed.Enum(),
			ErrorMessage: proto.String("the pgtandem broker keeps no schema registry"),
		}})
	case wire.BaseCommand_TC_CLIENT_CONNECT_REQUEST:
		c.send(&wire.BaseCommand{Type: wire.BaseCommand_TC_CLIENT_CONNECT_RESPONSE.Enum(), TcClientConnectResponse: &wire.CommandTcClientConnectResponse{
			RequestId: proto.Uint64(cmd.GetTcClientConnectRequest().GetRequestId()), Error: notAllowed.Enum(),
			Message: proto.String("the pgtandem broker does not support transactions"),
		}})
	default:
		c.log.Warn("closing connection after an unsupported command", "command", cmd.GetType().String())
		return false
	}
	return true
}

func (c *conn) sendError(requestID uint64, err error) {
	ce := toCommandError(err)
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_ERROR.Enum(), Error: &wire.CommandError{
		RequestId: proto.Uint64(requestID), Error: ce.code.Enum(), Message: proto.String(ce.msg),
	}})
}

func (c *conn) sendSuccess(requestID uint64) {
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_SUCCESS.Enum(), Success: &wire.CommandSuccess{RequestId: proto.Uint64(requestID)}})
}

func (c *conn) sendActiveChange(consumerID uint64, active bool) {
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_ACTIVE_CONSUMER_CHANGE.Enum(), ActiveConsumerChange: &wire.CommandActiveConsumerChange{
		ConsumerId: proto.Uint64(consumerID), IsActive: proto.Bool(active),
	}})
}

func (c *conn) handlePartitionedMetadata(cmd *wire.CommandPartitionedTopicMetadata) {
	resp := &wire.CommandPartitionedTopicMetadataResponse{RequestId: proto.Uint64(cmd.GetRequestId())}
	if _, err := ParseTopicName(cmd.GetTopic()); err != nil {
		ce := toCommandError(err)
		resp.Response = wire.CommandPartitionedTopicMetadataResponse_Failed.Enum()
		resp.Error, resp.Message = ce.code.Enum(), proto.String(ce.msg)
	} else {
		resp.Response = wire.CommandPartitionedTopicMetadataResponse_Success.Enum()
		resp.Partitions = proto.Uint32(0)
	}
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_PARTITIONED_METADATA_RESPONSE.Enum(), PartitionMetadataResponse: resp})
}

// handleLookup always answers with this broker, at the address the client
// reached it on, so no proxying or redirect is ever needed.
func (c *conn) handleLookup(cmd *wire.CommandLookupTopic) {
	resp := &wire.CommandLookupTopicResponse{RequestId: proto.Uint64(cmd.GetRequestId())}
	if _, err := ParseTopicName(cmd.GetTopic()); err != nil {
		ce := toCommandError(err)
		resp.Response = wire.CommandLookupTopicResponse_Failed.Enum()
		resp.Error, resp.Message = ce.code.Enum(), proto.String(ce.msg)
	} else {
		resp.Response = wire.CommandLookupTopicResponse_Connect.Enum()
		resp.BrokerServiceUrl = proto.String("pulsar://" + c.nc.LocalAddr().String())
		resp.Authoritative = proto.Bool(true)
	}
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_LOOKUP_RESPONSE.Enum(), LookupTopicResponse: resp})
}

func (c *conn) handleTopicsOfNamespace(cmd *wire.CommandGetTopicsOfNamespace) {
	topics := c.srv.topics.list(cmd.GetNamespace())
	if cmd.GetMode() == wire.CommandGetTopicsOfNamespace_NON_PERSISTENT {
		topics = nil
	}
	filtered := false
	if pat := cmd.GetTopicsPattern(); pat != "" {
		if re, err := regexp.Compile(pat); err == nil {
			filtered = true
			kept := topics[:0]
			for _, t := range topics {
				if re.MatchString(t) {
					kept = append(kept, t)
				}
			}
			topics = kept
		}
	}
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_GET_TOPICS_OF_NAMESPACE_RESPONSE.Enum(), GetTopicsOfNamespaceResponse: &wire.CommandGetTopicsOfNamespaceResponse{
		RequestId: proto.Uint64(cmd.GetRequestId()), Topics: topics, Filtered: proto.Bool(filtered), Changed: proto.Bool(true),
	}})
}

func (c *conn) handleProducer(cmd *wire.CommandProducer) {
	rid := cmd.GetRequestId()
	name, err := ParseTopicName(cmd.GetTopic())
	if err != nil {
		c.sendError(rid, err)
		return
	}
	c.mu.Lock()
	existing := c.producers[cmd.GetProducerId()]
	c.mu.Unlock()
	if existing != nil && existing.topic.name == name {
		c.sendProducerSuccess(rid, existing)
		return
	}
	mode := cmd.GetProducerAccessMode()
	if mode > 1 {
		c.sendError(rid, &commandError{code: notAllowed, msg: "only the Shared and Exclusive producer access modes are supported"})
		return
	}
	t, err := c.srv.topics.get(name, true)
	if err != nil {
		c.sendError(rid, err)
		return
	}
	p := &producer{id: cmd.GetProducerId(), name: cmd.GetProducerName(), topic: t, exclusive: mode == 1, conn: c}
	if p.name == "" {
		p.name = c.srv.nextProducerName()
	}
	if err := t.addProducer(p, p.exclusive); err != nil {
		c.sendError(rid, err)
		return
	}
	c.mu.Lock()
	c.producers[p.id] = p
	c.mu.Unlock()
	c.sendProducerSuccess(rid, p)
}

func (c *conn) sendProducerSuccess(requestID uint64, p *producer) {
	last := int64(-1)
	if c.srv.cfg.Dedup {
		last = p.topic.log.LastSequenceID(p.name)
	}
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_PRODUCER_SUCCESS.Enum(), ProducerSuccess: &wire.CommandProducerSuccess{
		RequestId: proto.Uint64(requestID), ProducerName: proto.String(p.name), LastSequenceId: proto.Int64(last),
		TopicEpoch: proto.Uint64(0), ProducerReady: proto.Bool(true),
	}})
}

func (c *conn) handleSend(cmd *wire.CommandSend, payload []byte) {
	c.mu.Lock()
	p := c.producers[cmd.GetProducerId()]
	c.mu.Unlock()
	sendError := func(code wire.ServerError, msg string) {
		c.send(&wire.BaseCommand{Type: wire.BaseCommand_SEND_ERROR.Enum(), SendError: &wire.CommandSendError{
			ProducerId: proto.Uint64(cmd.GetProducerId()), SequenceId: proto.Uint64(cmd.GetSequenceId()),
			Error: code.Enum(), Message: proto.String(msg),
		}})
	}
	if p == nil {
		sendError(wire.ServerError_UnknownError, fmt.Sprintf("no producer %d on this connection", cmd.GetProducerId()))
		return
	}
	meta, err := wire.ParsePayload(payload)
	if err != nil {
		c.log.Warn("refusing a damaged message", "topic", p.topic.name.String(), "producer", p.name, "sequence_id", cmd.GetSequenceId(), "err", err)
		code := wire.ServerError_UnknownError
		if wire.IsChecksumError(err) {
			code = wire.ServerError_ChecksumError
		}
		sendError(code, err.Error())
		return
	}
	rec := &store.Record{
		PublishTime:       int64(meta.GetPublishTime()),
		ProducerName:      p.name,
		SequenceID:        cmd.GetSequenceId(),
		HighestSequenceID: max(cmd.GetHighestSequenceId(), meta.GetHighestSequenceId()),
		NumMessages:       max(cmd.GetNumMessages(), 1),
		ChunkID:           -1,
		Payload:           payload,
	}
	if meta.GetNumChunksFromMsg() > 1 {
		rec.ChunkID, rec.NumChunks = meta.GetChunkId(), meta.GetNumChunksFromMsg()
	}
	t := p.topic
	t.log.Append(rec, func(res store.AppendResult) {
		if res.Err != nil {
			sendError(wire.ServerError_PersistenceError, res.Err.Error())
			return
		}
		id := &wire.MessageIdData{LedgerId: proto.Uint64(math.MaxUint64), EntryId: proto.Uint64(math.MaxUint64)}
		if !res.Duplicate {
			id = &wire.MessageIdData{LedgerId: proto.Uint64(uint64(res.Pos.Ledger)), EntryId: proto.Uint64(uint64(res.Pos.Entry))}
			t.msgIn.Add(int64(rec.NumMessages))
			t.bytesIn.Add(int64(len(rec.Payload)))
			t.lastPublish.Store(rec.PublishTime)
		}
		c.send(&wire.BaseCommand{Type: wire.BaseCommand_SEND_RECEIPT.Enum(), SendReceipt: &wire.CommandSendReceipt{
			ProducerId: proto.Uint64(p.id), SequenceId: proto.Uint64(rec.SequenceID), MessageId: id,
			HighestSequenceId: proto.Uint64(rec.HighestSequenceID),
		}})
	})
}

func (c *conn) handleCloseProducer(cmd *wire.CommandCloseProducer) {
	c.mu.Lock()
	p := c.producers[cmd.GetProducerId()]
	delete(c.producers, cmd.GetProducerId())
	c.mu.Unlock()
	if p != nil {
		p.topic.removeProducer(p)
	}
	c.sendSuccess(cmd.GetRequestId())
}

func (c *conn) handleSubscribe(cmd *wire.CommandSubscribe) {
	rid := cmd.GetRequestId()
	if err := c.subscribe(cmd); err != nil {
		c.sendError(rid, err)
		return
	}
	c.sendSuccess(rid)
}

func (c *conn) subscribe(cmd *wire.CommandSubscribe) error {
	name, err := ParseTopicName(cmd.GetTopic())
	if err != nil {
		return err
	}
	typ := cmd.GetSubType()
	if typ == wire.CommandSubscribe_Key_Shared {
		return &commandError{code: notAllowed, msg: "Key_Shared subscriptions are not supported by the pgtandem broker; use Exclusive, Failover or Shared"}
	}
	if cmd.GetSubscription() == "" {
		return &commandError{code: notAllowed, msg: "empty subscription name"}
	}
	c.mu.Lock()
	_, taken := c.consumers[cmd.GetConsumerId()]
	c.mu.Unlock()
	if taken {
		return &commandError{code: consumerBusy, msg: fmt.Sprintf("consumer id %d is already in use on this connection", cmd.GetConsumerId())}
	}
	t, err := c.srv.topics.get(name, cmd.GetForceTopicCreation())
	if err != nil {
		return err
	}
	if t == nil {
		return &commandError{code: wire.ServerError_TopicNotFound, msg: fmt.Sprintf("topic %s does not exist", name)}
	}
	durable := cmd.GetDurable()
	start := func() store.Position {
		if !durable && cmd.StartMessageId != nil {
			return startPosition(cmd.StartMessageId, t.log.Last)
		}
		if cmd.GetInitialPosition() == wire.CommandSubscribe_Earliest {
			return store.Earliest
		}
		return t.log.Last()
	}
	sub, err := t.subscription(cmd.GetSubscription(), durable, start)
	if err != nil {
		return err
	}
	cons := &consumer{id: cmd.GetConsumerId(), name: cmd.GetConsumerName(), conn: c}
	if err := sub.addConsumer(cons, typ); err != nil {
		return err
	}
	c.mu.Lock()
	c.consumers[cons.id] = cons
	c.mu.Unlock()
	return nil
}

func (c *conn) consumer(id uint64) *consumer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.consumers[id]
}

// requestConsumer returns the consumer a request names, or answers the
// request with ConsumerNotFound and returns nil.
func (c *conn) requestConsumer(id, requestID uint64) *consumer {
	cons := c.consumer(id)
	if cons == nil {
		c.sendError(requestID, consumerNotFound(id))
	}
	return cons
}

func consumerNotFound(id uint64) error {
	return &commandError{code: wire.ServerError_ConsumerNotFound, msg: fmt.Sprintf("no consumer %d on this connection", id)}
}

// forget removes id from m, one of c's maps, if it still names v: a client
// may have reused the id for a new registration meanwhile.
func forget[T comparable](c *conn, m map[uint64]T, id uint64, v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m[id] == v {
		delete(m, id)
	}
}

// detachConsumer is the broker closing one of this connection's consumers;
// the client reconnects it.
func (c *conn) detachConsumer(cons *consumer) {
	forget(c, c.consumers, cons.id, cons)
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_CLOSE_CONSUMER.Enum(), CloseConsumer: &wire.CommandCloseConsumer{
		ConsumerId: proto.Uint64(cons.id), RequestId: proto.Uint64(0),
	}})
}

// detachProducer is the broker closing one of this connection's producers;
// the client reconnects it.
func (c *conn) detachProducer(p *producer) {
	forget(c, c.producers, p.id, p)
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_CLOSE_PRODUCER.Enum(), CloseProducer: &wire.CommandCloseProducer{
		ProducerId: proto.Uint64(p.id), RequestId: proto.Uint64(0),
	}})
}

func (c *conn) handleAck(cmd *wire.CommandAck) {
	cons := c.consumer(cmd.GetConsumerId())
	var err error
	if cons == nil {
		err = consumerNotFound(cmd.GetConsumerId())
	} else {
		err = cons.sub.ack(cons, cmd.GetAckType() == wire.CommandAck_Cumulative, cmd.GetMessageId())
	}
	if cmd.RequestId == nil {
		return
	}
	resp := &wire.CommandAckResponse{ConsumerId: proto.Uint64(cmd.GetConsumerId()), RequestId: proto.Uint64(cmd.GetRequestId())}
	if err != nil {
		ce := toCommandError(err)
		resp.Error, resp.Message = ce.code.Enum(), proto.String(ce.msg)
	}
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_ACK_RESPONSE.Enum(), AckResponse: resp})
}

func (c *conn) handleSeek(cmd *wire.CommandSeek) {
	rid := cmd.GetRequestId()
	cons := c.requestConsumer(cmd.GetConsumerId(), rid)
	if cons == nil {
		return
	}
	log := cons.sub.topic.log
	var md store.Position
	switch {
	case cmd.MessageId != nil:
		md = startPosition(cmd.MessageId, log.Last)
	case cmd.MessagePublishTime != nil:
		md = markDeleteForTime(log, int64(cmd.GetMessagePublishTime()))
	default:
		c.sendError(rid, &commandError{code: notAllowed, msg: "seek needs a message id or a publish time"})
		return
	}
	detached, err := cons.sub.resetTo(md)
	if err != nil {
		c.sendError(rid, err)
	} else {
		c.sendSuccess(rid)
	}
	cons.sub.finishDetach(detached)
}

// markDeleteForTime returns the cursor position from which the first record
// published at or after ms is delivered next.
func markDeleteForTime(log *store.Log, ms int64) store.Position {
	if p, ok := log.FirstAtOrAfterTime(ms); ok {
		return p.Before()
	}
	return log.Last()
}

func (c *conn) handleGetLastMessageID(cmd *wire.CommandGetLastMessageId) {
	rid := cmd.GetRequestId()
	cons := c.requestConsumer(cmd.GetConsumerId(), rid)
	if cons == nil {
		return
	}
	log := cons.sub.topic.log
	last := log.Last()
	batchIndex := int32(-1)
	if last.Entry >= 0 {
		if n := log.NumMessages(last); n > 1 {
			batchIndex = n - 1
		}
	}
	md := cons.sub.markDeletePosition()
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_GET_LAST_MESSAGE_ID_RESPONSE.Enum(), GetLastMessageIdResponse: &wire.CommandGetLastMessageIdResponse{
		RequestId: proto.Uint64(rid),
		LastMessageId: &wire.MessageIdData{
			LedgerId: proto.Uint64(uint64(last.Ledger)), EntryId: proto.Uint64(uint64(last.Entry)), BatchIndex: proto.Int32(batchIndex),
		},
		ConsumerMarkDeletePosition: &wire.MessageIdData{LedgerId: proto.Uint64(uint64(md.Ledger)), EntryId: proto.Uint64(uint64(md.Entry))},
	}})
}

func (c *conn) handleUnsubscribe(cmd *wire.CommandUnsubscribe) {
	rid := cmd.GetRequestId()
	cons := c.requestConsumer(cmd.GetConsumerId(), rid)
	if cons == nil {
		return
	}
	if err := cons.sub.unsubscribe(cons, cmd.GetForce()); err != nil {
		c.sendError(rid, err)
		return
	}
	c.mu.Lock()
	delete(c.consumers, cons.id)
	c.mu.Unlock()
	c.sendSuccess(rid)
}

func (c *conn) handleCloseConsumer(cmd *wire.CommandCloseConsumer) {
	c.mu.Lock()
	cons := c.consumers[cmd.GetConsumerId()]
	delete(c.consumers, cmd.GetConsumerId())
	c.mu.Unlock()
	if cons != nil {
		cons.sub.removeConsumer(cons)
	}
	c.sendSuccess(cmd.GetRequestId())
}

func (c *conn) handleConsumerStats(cmd *wire.CommandConsumerStats) {
	rid := cmd.GetRequestId()
	cons := c.requestConsumer(cmd.GetConsumerId(), rid)
	if cons == nil {
		return
	}
	st := cons.sub.stats()
	resp := &wire.CommandConsumerStatsResponse{
		RequestId: proto.Uint64(rid), ConsumerName: proto.String(cons.name), Type: proto.String(st.typ.String()),
		MsgBacklog: proto.Uint64(uint64(st.backlog)),
	}
	for _, cs := range st.consumers {
		if cs.name == cons.name {
			resp.AvailablePermits = proto.Uint64(uint64(max(cs.permits, 0)))
			resp.UnackedMessages = proto.Uint64(uint64(cs.unacked))
		}
	}
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_CONSUMER_STATS_RESPONSE.Enum(), ConsumerStatsResponse: resp})
}

// cleanup detaches everything the connection had attached: producers go,
// consumers' unacknowledged records are redelivered to others.
func (c *conn) cleanup() {
	c.mu.Lock()
	producers, consumers := c.producers, c.consumers
	c.producers, c.consumers = map[uint64]*producer{}, map[uint64]*consumer{}
	c.mu.Unlock()
	for _, p := range producers {
		p.topic.removeProducer(p)
	}
	for _, cons := range consumers {
		cons.sub.removeConsumer(cons)
	}
}
