package pg2broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// slotState is the slot's row of pg_replication_slots.
type slotState struct {
	plugin, database *string
	// walStatus is "lost" once the slot is invalidated (NULL before
	// PostgreSQL 13).
	walStatus *string
	// invalidationReason says why it was invalidated (PostgreSQL 17+).
	invalidationReason *string
	confirmed          *pglogrepl.LSN
	activePID          *int32
}

// readSlotState reads the slot's row; found is false when there is none.
func readSlotState(ctx context.Context, conn *pgx.Conn, major int, slot string) (st slotState, found bool, err error) {
	walStatus, reason := "NULL::text", "NULL::text"
	if major >= 13 {
		walStatus = "wal_status"
	}
	if major >= 17 {
		reason = "invalidation_reason"
	}
	err = conn.QueryRow(ctx, `SELECT plugin, database, `+walStatus+`, `+reason+`, confirmed_flush_lsn, active_pid
		FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&st.plugin, &st.database, &st.walStatus, &st.invalidationReason, &st.confirmed, &st.activePID)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("read slot %s: %w", slot, err)
	}
	return st, true, nil
}

// invalidated tells why the slot can no longer be streamed from, or "" while
// it can.
func (st slotState) invalidated() string {
	switch {
	case st.invalidationReason != nil:
		return "invalidation_reason " + *st.invalidationReason
	case st.walStatus != nil && *st.walStatus == "lost":
		return "wal_status lost: PostgreSQL removed WAL it still needed"
	}
	return ""
}

func invalidatedError(slot, why string) *SlotError {
	return &SlotError{Slot: slot, Reason: "is invalidated (" + why + "); the target must be synchronised again with pgtandem init"}
}

// readSlot checks the slot and returns its confirmed position; a missing
// slot is an error unless it may be created.
func readSlot(ctx context.Context, conn *pgx.Conn, src source, slot string, mayCreate bool) (pglogrepl.LSN, bool, error) {
	st, found, err := readSlotState(ctx, conn, src.Major, slot)
	if err != nil {
		return 0, false, fmt.Errorf("preflight: %w", err)
	}
	if !found {
		if !mayCreate {
			return 0, false, &SlotError{Slot: slot, Reason: "does not exist: run pgtandem init, or start pg2broker with --create-slot (a slot is never recreated silently: changes made while it was missing would be lost)"}
		}
		return 0, true, nil
	}
	switch {
	case st.plugin == nil || *st.plugin != "pgoutput":
		return 0, false, &SlotError{Slot: slot, Reason: fmt.Sprintf("is not a pgoutput logical slot (plugin %s)", deref(st.plugin))}
	case st.database == nil || *st.database != src.Database:
		return 0, false, &SlotError{Slot: slot, Reason: fmt.Sprintf("belongs to database %s, not %s", deref(st.database), src.Database)}
	case st.invalidated() != "":
		return 0, false, invalidatedError(slot, st.invalidated())
	case st.confirmed == nil:
		return 0, false, &SlotError{Slot: slot, Reason: "has no confirmed position"}
	}
	return *st.confirmed, false, nil
}

func deref(s *string) string {
	if s == nil {
		return "none"
	}
	return *s
}

// createSlot creates the slot, which starts at the present.
func createSlot(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(ctx, `SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("create slot %s: %w", slot, err)
	}
	return lsn, nil
}

// waitSlotFree waits while another process streams from the slot: a second
// replica is a standby that takes over when the active one goes away.
func (s *Service) waitSlotFree(ctx context.Context, conn *pgx.Conn, major int, slot string, log *slog.Logger) error {
	announced := false
	for {
		st, found, err := readSlotState(ctx, conn, major, slot)
		if err != nil {
			return err
		}
		if !found {
			return &SlotError{Slot: slot, Reason: "disappeared while waiting for it"}
		}
		if st.activePID == nil {
			return nil
		}
		pid := *st.activePID
		if !announced {
			log.Info("slot is in use by another capture; waiting as standby", "active_pid", pid)
			announced = true
		}
		s.setState(fmt.Sprintf("standby: slot %s is active for pid %d", slot, pid))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// slotErr turns an error of starting or reading the replication stream into
// a fatal *SlotError when the slot was dropped or invalidated; anything else
// stays retryable. The server writes its messages in its lc_messages
// language, so only the SQLSTATE is read, and the slot's row confirms it:
// both codes are also used for other objects and states.
func slotErr(ctx context.Context, conn *pgx.Conn, major int, slot string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	if pgErr.Code != pgerrcode.UndefinedObject && pgErr.Code != pgerrcode.ObjectNotInPrerequisiteState {
		return err
	}
	st, found, readErr := readSlotState(ctx, conn, major, slot)
	switch {
	case readErr != nil:
		return fmt.Errorf("%w (and the slot's state, which tells why, could not be read: %w)", err, readErr)
	case !found:
		return &SlotError{Slot: slot, Reason: "was dropped: " + pgErr.Message}
	case st.invalidated() != "":
		return invalidatedError(slot, st.invalidated())
	}
	return err
}
