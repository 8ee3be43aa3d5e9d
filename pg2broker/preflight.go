package pg2broker

import (
	"context"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// source is what preflight learned about the source cluster and its slot.
type source struct {
	catalog.SourceInfo
	// confirmed is the slot's confirmed_flush_lsn: where streaming resumes.
	confirmed pglogrepl.LSN
	// slotMissing says the slot does not exist yet and may be created
	// (Config.CreateSlot), once the topic shows it never had one.
	slotMissing bool
}

// preflight checks everything capture depends on, in the order that makes
// the first failure the most useful, and creates the publication when
// cfg.CreateSlot asks for it.
func preflight(ctx context.Context, conn *pgx.Conn, cfg Config) (source, error) {
	info, err := catalog.PrepareSource(ctx, conn, cfg.CreateSlot)
	src := source{SourceInfo: info}
	if err != nil {
		return src, err
	}
	src.confirmed, src.slotMissing, err = readSlot(ctx, conn, src, catalog.SlotName(cfg.Cluster), cfg.CreateSlot)
	return src, err
}

// typeNamer names column types with format_type, as the event format
// documents.
func typeNamer(conn *pgx.Conn) TypeNamer {
	return func(ctx context.Context, oid uint32, typmod int32) (string, error) {
		var name string
		err := conn.QueryRow(ctx, `SELECT format_type($1::oid, $2::int)`, oid, typmod).Scan(&name)
		return name, err
	}
}
