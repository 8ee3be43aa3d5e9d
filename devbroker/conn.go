package devbroker

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
		// A TLS client takes the pulsar+ssl:// address and nothing else.
		if _, ok := c.nc.(*tls.Conn); ok {
			resp.BrokerServiceUrlTls = proto.String("pulsar+ssl://" + c.nc.LocalAddr().String())
		}
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
			topics = slices.DeleteFunc(topics, func(t string) bool { return !re.MatchString(t) })
		}
	}
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_GET_TOPICS_OF_NAMESPACE_RESPONSE.Enum(), GetTopicsOfNamespaceResponse: &wire.CommandGetTopicsOfNamespaceResponse{
		RequestId: proto.Uint64(cmd.GetRequestId()), Topics: topics, Filtered: proto.Bool(filtered), Changed: proto.Bool(true),
	}})
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
