package bootstrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// ClonePlan is what clone mode's first step prints: where the physical copy
// must stop so that the slot continues exactly after it.
type ClonePlan struct {
	Slot string
	// SlotLSN is the slot's consistent point: transactions committing
	// before it must be in the clone, none at or after it.
	SlotLSN pglogrepl.LSN
	// RecoverySettings stop the copy's recovery at SlotLSN and promote it.
	RecoverySettings []string
}

// PrepareClone is clone mode's first step, run while the physical copy of
// the source (disk snapshot or pg_basebackup, taken before or after) has not
// been recovered yet: it creates publication and slot and returns the LSN at
// which the copy's recovery must stop.
func PrepareClone(ctx context.Context, cfg Config) (*ClonePlan, error) {
	src, err := catalog.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return nil, fmt.Errorf("init: connect to source: %w", err)
	}
	defer src.Close(context.Background())
	if _, err := catalog.PrepareSource(ctx, src, true); err != nil {
		return nil, err
	}
	slot := catalog.SlotName(cfg.Source)
	var at pglogrepl.LSN
	err = src.QueryRow(ctx, `SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&at)
	if err != nil {
		if exists, _ := slotExists(ctx, src, slot); exists {
			return nil, &SlotExistsError{Slot: slot}
		}
		return nil, fmt.Errorf("init: create slot %s: %w", slot, err)
	}
	return &ClonePlan{
		Slot:    slot,
		SlotLSN: at,
		RecoverySettings: []string{
			fmt.Sprintf("recovery_target_lsn = '%s'", at),
			// Stop just before the slot's point: a commit right at it is
			// decoded by the slot, so the clone must not have it too.
			"recovery_target_inclusive = off",
			"recovery_target_action = 'promote'",
		},
	}, nil
}

// FinishClone is clone mode's last step, run on the promoted (and, for a
// new major, pg_upgraded) copy: it records slotLSN, the point PrepareClone
// returned and the copy's recovery stopped before, as the handoff in the
// target's apply_progress, so broker2pg applies exactly what came after.
// The slot's own position cannot serve: once pg2broker has streamed, it has
// moved past transactions the copy does not hold.
func FinishClone(ctx context.Context, cfg Config, slotLSN pglogrepl.LSN) error {
	if slotLSN == 0 {
		return errors.New("init --finish: --slot-lsn is required: the slot LSN that init --mode clone printed")
	}
	src, err := catalog.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return fmt.Errorf("init: connect to source: %w", err)
	}
	defer src.Close(context.Background())
	info, err := catalog.PrepareSource(ctx, src, false)
	if err != nil {
		return err
	}
	slot := catalog.SlotName(cfg.Source)
	if exists, err := slotExists(ctx, src, slot); err != nil || !exists {
		return fmt.Errorf("init --finish: slot %s does not exist on the source (%v): the clone cannot be continued; run init --mode clone again with a new copy", slot, err)
	}
	dst, err := catalog.Connect(ctx, cfg.TargetDSN)
	if err != nil {
		return fmt.Errorf("init: connect to target: %w", err)
	}
	defer dst.Close(context.Background())
	var inRecovery bool
	if err := dst.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		return err
	}
	if inRecovery {
		return errors.New("init --finish: the target is still in recovery: wait until it reached the recovery target and promoted")
	}
	topic := cfg.Topic
	if topic == "" {
		topic = catalog.Topic(cfg.TopicPrefix, info.Major)
	}
	// A new copy starts a new history: per-table handoffs of an earlier
	// copy-mode init of this target no longer hold.
	tx, err := dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("init --finish: record the handoff on the target: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := catalog.RecordTableHandoffs(ctx, tx.Conn(), cfg.Source, nil); err != nil {
		return err
	}
	if err := catalog.RecordHandoff(ctx, tx.Conn(), cfg.Source, topic, info.SystemID, slotLSN-1); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
