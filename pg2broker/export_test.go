package pg2broker

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ClassifySlotError lets the external tests check how the server's answers
// about a slot are told apart, with a server's real, translated messages.
func ClassifySlotError(ctx context.Context, conn *pgx.Conn, major int, slot string, err error) error {
	return slotErr(ctx, conn, major, slot, err)
}
