package bootstrap

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

// copySequences sets every target sequence to its value on the source.
// Sequences are not transactional, so reading one in a snapshot still gives
// its current value: any value from the copy on is as good, and the switch
// sets them again at the end.
func copySequences(ctx context.Context, cfg Config, dst *pgx.Conn) error {
	src, err := catalog.Connect(ctx, cfg.SourceDSN)
	if err != nil {
		return fmt.Errorf("init: sequences: connect to source: %w", err)
	}
	defer src.Close(context.Background())
	rows, err := src.Query(ctx, `SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences WHERE schemaname NOT IN ('pgtandem')`)
	if err != nil {
		return fmt.Errorf("init: list sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("init: list sequences: %w", err)
	}
	for _, seq := range seqs {
		var last int64
		var called bool
		if err := src.QueryRow(ctx, `SELECT last_value, is_called FROM `+seq).Scan(&last, &called); err != nil {
			return fmt.Errorf("init: read sequence %s: %w", seq, err)
		}
		if _, err := dst.Exec(ctx, `SELECT setval($1::regclass, $2, $3)`, seq, last, called); err != nil {
			return fmt.Errorf("init: set sequence %s on the target: %w", seq, err)
		}
	}
	return nil
}
