package broker2pg

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// RecordHandoff records in the target's pgtandem.apply_progress that every
// transaction of source committed at or before after is already in the
// target, as `pgtandem init` does once its copy is complete: broker2pg then
// starts with the first transaction after it. Unlike StartAfterLSN it
// replaces a position stored before, because a new copy starts a new history.
func RecordHandoff(ctx context.Context, conn *pgx.Conn, source, topic, sourceSystem string, after pglogrepl.LSN) error {
	if _, err := ensureProgress(ctx, conn, source, topic, after); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, `UPDATE pgtandem.apply_progress SET topic = $2, source_system = $3, commit_lsn = $4::pg_lsn, end_lsn = NULL,
		message_id = NULL, commit_time = NULL, applied_at = now(), blocked_reason = NULL, blocked_since = NULL WHERE source_cluster = $1`,
		source, topic, sourceSystem, after.String())
	if err != nil {
		return fmt.Errorf("record the handoff of %s at %s in pgtandem.apply_progress: %w", source, after, err)
	}
	return nil
}
