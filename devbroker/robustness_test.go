package devbroker_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/devbroker/wire"
	"github.com/pgtandem/pgtandem/internal/brokertest"
)

// rawConn is a hand-driven protocol connection for feeding the broker
// what no client would send.
type rawConn struct {
	t  *testing.T
	nc net.Conn
}

func dialRaw(t *testing.T, b *brokertest.Broker) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(b.URL(), "pulsar://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) connect(token string) {
	r.t.Helper()
	cmd := &wire.CommandConnect{ClientVersion: proto.String("raw"), ProtocolVersion: proto.Int32(20)}
	if token != "" {
		cmd.AuthMethodName, cmd.AuthData = proto.String("token"), []byte(token)
	}
	r.write(wire.AppendCommand(nil, &wire.BaseCommand{Type: wire.BaseCommand_CONNECT.Enum(), Connect: cmd}))
}

func (r *rawConn) read() *wire.BaseCommand {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := wire.NewDecoder(r.nc, 1<<20).Next()
	if err != nil {
		r.t.Fatalf("read frame: %v", err)
	}
	return f.Cmd
}

// expectClosed checks that the broker hung up.
func (r *rawConn) expectClosed() {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(r.nc); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		r.t.Fatalf("broker kept the connection open: %v", err)
	}
}

func TestBadFramesCloseOnlyTheirConnection(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b.URL())
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "robust", DisableBatching: true})
	cons := newConsumer(t, c, pulsar.ConsumerOptions{Topic: "robust", SubscriptionName: "s"})

	garbage := dialRaw(t, b)
	garbage.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	garbage.expectClosed()

	oversized := dialRaw(t, b)
	oversized.connect("")
	if got := oversized.read().GetType(); got != wire.BaseCommand_CONNECTED {
		t.Fatalf("answer to CONNECT: %v", got)
	}
	oversized.write(binary.BigEndian.AppendUint32(nil, 1<<30))
	oversized.expectClosed()

	shortCommand := dialRaw(t, b)
	shortCommand.connect("")
	shortCommand.read()
	shortCommand.write([]byte{0, 0, 0, 8, 0, 0, 0, 100, 1, 2, 3, 4})
	shortCommand.expectClosed()

	unsupported := dialRaw(t, b)
	unsupported.connect("")
	unsupported.read()
	unsupported.write(wire.AppendCommand(nil, &wire.BaseCommand{Type: wire.BaseCommand_WATCH_TOPIC_LIST.Enum()}))
	unsupported.expectClosed()

	noBody := dialRaw(t, b)
	noBody.connect("")
	noBody.read()
	noBody.write(wire.AppendCommand(nil, &wire.BaseCommand{Type: wire.BaseCommand_SEEK.Enum()}))
	noBody.expectClosed()

	noConnect := dialRaw(t, b)
	noConnect.write(wire.AppendCommand(nil, &wire.BaseCommand{Type: wire.BaseCommand_PING.Enum(), Ping: &wire.CommandPing{}}))
	if got := noConnect.read().GetType(); got != wire.BaseCommand_ERROR {
		t.Fatalf("answer to PING before CONNECT: %v", got)
	}
	noConnect.expectClosed()

	damaged := dialRaw(t, b)
	damaged.connect("")
	damaged.read()
	damaged.write(wire.AppendCommand(nil, &wire.BaseCommand{Type: wire.BaseCommand_PRODUCER.Enum(), Producer: &wire.CommandProducer{
		Topic: proto.String("robust"), ProducerId: proto.Uint64(1), RequestId: proto.Uint64(1),
	}}))
	if got := damaged.read().GetType(); got != wire.BaseCommand_PRODUCER_SUCCESS {
		t.Fatalf("answer to PRODUCER: %v", got)
	}
	payload := []byte{0x0e, 0x01, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 'x'}
	damaged.write(wire.AppendPayloadCommand(nil, &wire.BaseCommand{Type: wire.BaseCommand_SEND.Enum(), Send: &wire.CommandSend{
		ProducerId: proto.Uint64(1), SequenceId: proto.Uint64(0),
	}}, payload))
	if got := damaged.read(); got.GetSendError().GetError() != wire.ServerError_ChecksumError {
		t.Fatalf("answer to a SEND with a bad checksum: %v", got)
	}

	// The topic is intact and the well-behaved client never noticed.
	sendN(t, p, 0, 3)
	equalStrings(t, receiveN(t, cons, 3, true), payloads(0, 3))
}

func TestTokenAuthentication(t *testing.T) {
	b := brokertest.Start(t, brokertest.WithToken("s3cret"))

	good := newClient(t, b.URL(), func(o *pulsar.ClientOptions) { o.Authentication = pulsar.NewAuthenticationToken("s3cret") })
	p := newProducer(t, good, pulsar.ProducerOptions{Topic: "auth"})
	sendN(t, p, 0, 1)

	bad := newClient(t, b.URL(), func(o *pulsar.ClientOptions) {
		o.Authentication = pulsar.NewAuthenticationToken("wrong")
		o.OperationTimeout = 2 * time.Second
	})
	if _, err := bad.CreateProducer(pulsar.ProducerOptions{Topic: "auth"}); err == nil {
		t.Fatal("a client with a wrong token created a producer")
	}
	none := newClient(t, b.URL(), func(o *pulsar.ClientOptions) { o.OperationTimeout = 2 * time.Second })
	if _, err := none.CreateProducer(pulsar.ProducerOptions{Topic: "auth"}); err == nil {
		t.Fatal("a client without a token created a producer")
	}

	raw := dialRaw(t, b)
	raw.connect("wrong")
	if got := raw.read(); got.GetError().GetError() != wire.ServerError_AuthenticationError {
		t.Fatalf("answer to a wrong token: %v", got)
	}
	raw.expectClosed()
}
