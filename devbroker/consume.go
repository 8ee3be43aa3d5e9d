package devbroker

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/pgtandem/pgtandem/devbroker/store"
	"github.com/pgtandem/pgtandem/devbroker/wire"
)

func (c *conn) sendActiveChange(consumerID uint64, active bool) {
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_ACTIVE_CONSUMER_CHANGE.Enum(), ActiveConsumerChange: &wire.CommandActiveConsumerChange{
		ConsumerId: proto.Uint64(consumerID), IsActive: proto.Bool(active),
	}})
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

// detachConsumer is the broker closing one of this connection's consumers;
// the client reconnects it.
func (c *conn) detachConsumer(cons *consumer) {
	forget(c, c.consumers, cons.id, cons)
	c.send(&wire.BaseCommand{Type: wire.BaseCommand_CLOSE_CONSUMER.Enum(), CloseConsumer: &wire.CommandCloseConsumer{
		ConsumerId: proto.Uint64(cons.id), RequestId: proto.Uint64(0),
	}})
}

func (c *conn) handleAck(cmd *wire.CommandAck) {
	cons := c.consumer(cmd.GetConsumerId())
	var err error
	if cons == nil {
		err = consumerNotFound(cmd.GetConsumerId())
	} else {
		err = cons.sub.ack(cons, cmd.GetAckType() == wire.CommandAck_Cumulative, cmd.GetMessageId(), cmd.RequestId != nil)
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
