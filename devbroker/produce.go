package devbroker

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/devbroker/store"
	"github.com/pgtandem/pgtandem/devbroker/wire"
)

// producer is one client producer attached to a topic.
type producer struct {
	id        uint64
	name      string
	topic     *topic
	exclusive bool
	conn      *conn
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

// detachProducer is the broker closing one of this connection's producers;
// the client reconnects it.
func (c *conn) detachProducer(p *producer) {
	forget(c, c.producers, p.id, p)
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_CLOSE_PRODUCER.Enum(), CloseProducer: &wire.CommandCloseProducer{
		ProducerId: proto.Uint64(p.id), RequestId: proto.Uint64(0),
	}})
}
