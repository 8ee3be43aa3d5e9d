package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// Phases of an init, as pgtandem.init_state records them.
const (
	// phaseSchema: pg_restore of the tables (pre-data) is running, or
	// stopped halfway; no slot is recorded yet.
	phaseSchema = "schema"
	// phaseCopy: the tables exist on the target and are being copied; the
	// slot's consistent point is recorded as soon as the slot exists.
	phaseCopy = "copy"
	// phasePostData: every table is copied; indexes, constraints and
	// triggers are being built.
	phasePostData = "post-data"
	phaseDone     = "done"
)

// Schema modes, as pgtandem.init_state records them: a resume must run in
// the mode the interrupted init ran in.
const (
	// modeRestore: init restored the source's schema into an empty target.
	modeRestore = "restore"
	// modeExisting: the operator created the tables, init found them empty.
	modeExisting = "existing"
	// modeExistingNonEmpty: the tables may have held rows before init.
	modeExistingNonEmpty = "existing-nonempty"
)

// initState is one row of pgtandem.init_state: how far the init of one
// source cluster into this target got.
type initState struct {
	phase        string
	mode         string
	sourceSystem string
	slot         string
	// consistent is the slot's consistent point, 0 until the slot exists.
	consistent pglogrepl.LSN
	updated    time.Time
}

// readState returns the init state of source, nil when the target has none
// (a fresh target, or one initialised by a pgtandem without init_state).
func readState(ctx context.Context, conn *pgx.Conn, source string) (*initState, error) {
	var s initState
	err := conn.QueryRow(ctx, `SELECT phase, schema_mode, source_system, slot_name, coalesce(consistent_lsn, '0/0'), updated_at
		FROM pgtandem.init_state WHERE source_cluster = $1`, source).Scan(&s.phase, &s.mode, &s.sourceSystem, &s.slot, &s.consistent, &s.updated)
	var pgErr *pgconn.PgError
	if errors.Is(err, pgx.ErrNoRows) || errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("init: read pgtandem.init_state on the target: %w", err)
	}
	return &s, nil
}

// createState records that an init of source starts, in schema mode mode,
// with phase.
func createState(ctx context.Context, conn *pgx.Conn, source, system, slot, mode, phase string) (*initState, error) {
	if err := catalog.Migrate(ctx, conn); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	_, err := conn.Exec(ctx, `INSERT INTO pgtandem.init_state (source_cluster, source_system, slot_name, phase, schema_mode) VALUES ($1, $2, $3, $4, $5)`,
		source, system, slot, phase, mode)
	if err != nil {
		return nil, fmt.Errorf("init: record the start of the init of %s in pgtandem.init_state: %w", source, err)
	}
	return &initState{phase: phase, mode: mode, sourceSystem: system, slot: slot}, nil
}

// setPhase moves the init of source to phase.
func (s *initState) setPhase(ctx context.Context, conn *pgx.Conn, source, phase string) error {
	_, err := conn.Exec(ctx, `UPDATE pgtandem.init_state SET phase = $2, updated_at = now() WHERE source_cluster = $1`, source, phase)
	if err != nil {
		return fmt.Errorf("init: record phase %s of the init of %s in pgtandem.init_state: %w", phase, source, err)
	}
	s.phase = phase
	return nil
}

// recordSlot records the consistent point of the slot just created.
func (s *initState) recordSlot(ctx context.Context, conn *pgx.Conn, source string, consistent pglogrepl.LSN) error {
	_, err := conn.Exec(ctx, `UPDATE pgtandem.init_state SET consistent_lsn = $2, updated_at = now() WHERE source_cluster = $1`,
		source, consistent)
	if err != nil {
		return fmt.Errorf("init: record the slot's consistent point %s in pgtandem.init_state: %w", consistent, err)
	}
	s.consistent = consistent
	return nil
}

// copiedPart is one row of pgtandem.init_tables: a table, or one key range
// of it, committed on the target with the rows of snapshot.
type copiedPart struct {
	schema, table string
	part, parts   int
	snapshot      pglogrepl.LSN
	rows, bytes   int64
	took          time.Duration
}

func readCopied(ctx context.Context, conn *pgx.Conn, source string) ([]copiedPart, error) {
	rows, err := conn.Query(ctx, `SELECT schema_name, table_name, part, parts, snapshot_lsn, rows, bytes, seconds
		FROM pgtandem.init_tables WHERE source_cluster = $1`, source)
	if err != nil {
		return nil, fmt.Errorf("init: read pgtandem.init_tables on the target: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (copiedPart, error) {
		var c copiedPart
		var seconds float64
		err := r.Scan(&c.schema, &c.table, &c.part, &c.parts, &c.snapshot, &c.rows, &c.bytes, &seconds)
		c.took = time.Duration(seconds * float64(time.Second))
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("init: read pgtandem.init_tables on the target: %w", err)
	}
	return out, nil
}

// recordPartSQL is sent in the target transaction that copied the part.
const recordPartSQL = `INSERT INTO pgtandem.init_tables (source_cluster, schema_name, table_name, part, parts, snapshot_lsn, rows, bytes, seconds)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`

// lockInit makes sure no other init of source into this target runs: two
// would copy the same tables. The lock ends with the session, also when the
// process is killed; the wait covers the moments a killed run's session
// takes to end.
func lockInit(ctx context.Context, conn *pgx.Conn, source string) error {
	b := &pgx.Batch{}
	b.Queue(`SET lock_timeout = '10s'`)
	b.Queue(`SELECT pg_advisory_lock(hashtext('pgtandem init'), hashtext($1))`, source)
	b.Queue(`RESET lock_timeout`)
	err := conn.SendBatch(ctx, b).Close()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable {
		return fmt.Errorf("init: another pgtandem init of %s into this target is running (it holds the advisory lock pgtandem init/%s): wait for it to end, or stop it", source, source)
	}
	if err != nil {
		return fmt.Errorf("init: take the init lock on the target: %w", err)
	}
	return nil
}
