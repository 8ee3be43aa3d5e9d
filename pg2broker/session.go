package pg2broker

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// session runs one connected attempt: preflight, slot ownership, producer,
// resume point, stream.
func (s *Service) session(ctx context.Context) error {
	s.setState("connecting")
	conn, err := catalog.Connect(ctx, s.cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())

	src, err := preflight(ctx, conn, s.cfg)
	if err != nil {
		return err
	}
	topic := s.cfg.Topic
	if topic == "" {
		topic = catalog.Topic(s.cfg.TopicPrefix, src.Major)
	}
	slot := catalog.SlotName(s.cfg.Cluster)
	log := s.log.With("slot", slot, "topic", topic)
	if !src.slotMissing {
		if err := s.waitSlotFree(ctx, conn, src.Major, slot, log); err != nil {
			return err
		}
	}

	if err := s.pub.open(topic); err != nil {
		return err
	}
	tail, err := readTail(ctx, s.pub.client, topic)
	if err != nil {
		return err
	}
	if tail != nil && tail.system != "" && tail.system != src.SystemID {
		return &TopicMismatchError{Topic: topic, TopicSystem: tail.system, SourceSystem: src.SystemID}
	}
	if src.slotMissing {
		if tail != nil {
			// The topic was fed from a slot that no longer exists: a new slot
			// would start at the present and skip whatever came between.
			return &SlotError{Slot: slot, Reason: fmt.Sprintf("does not exist, but topic %s holds changes up to %s: the slot was dropped, and changes since then are lost to this topic; synchronise the target again with pgtandem init and use a new topic", topic, tail.lsn)}
		}
		if src.confirmed, err = createSlot(ctx, conn, slot); err != nil {
			return err
		}
		log.Info("created slot", "at", src.confirmed)
	}

	repl, err := catalog.ConnectReplication(ctx, s.cfg.DSN, catalog.WrapDial(coalescingDial))
	if err != nil {
		return fmt.Errorf("replication connection to source: %w", err)
	}
	defer repl.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, repl, slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: pluginArgs(src.Major)})
	if err != nil {
		return slotErr(ctx, conn, src.Major, slot, fmt.Errorf("start replication from slot %s: %w", slot, err))
	}
	tracker := newAckTracker(src.confirmed)
	s.tracker.Store(tracker)
	st := &stream{
		svc: s, log: log, topic: topic, slot: slot, major: src.Major, system: src.SystemID, conn: conn, repl: repl, pub: s.pub,
		tracker: tracker, resume: newResume(tail), dec: newDecoder(typeNamer(conn), catalog.OriginPrefix),
		framer: event.NewFramer(src.SystemID, s.cfg.FrameMaxChanges, s.cfg.FrameMaxBytes),
	}
	if tail != nil && !tail.last {
		// Killed between two fragments of a transaction: the rest of it
		// continues their numbering.
		st.framer.ContinueAfter(tail.lsn, tail.fragment)
	}
	log.Info("streaming", "from", src.confirmed, "pg_major", src.Major, "resume_after", tail)
	s.setState("streaming")
	return st.run(ctx)
}

// pluginArgs asks each major for the newest pgoutput protocol it speaks
// (without streaming of in-progress transactions: events are published in
// commit order), for logical messages where supported, and on 16+ for
// transactions without a replication origin only.
func pluginArgs(major int) []string {
	proto := 1
	switch {
	case major >= 16:
		proto = 4
	case major == 15:
		proto = 3
	case major == 14:
		proto = 2
	}
	args := []string{fmt.Sprintf("proto_version '%d'", proto), "publication_names '" + catalog.PublicationName + "'"}
	if major >= 14 {
		args = append(args, "messages 'true'")
	}
	if major >= 16 {
		args = append(args, "origin 'none'")
	}
	return args
}
