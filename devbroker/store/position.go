package store

import (
	"fmt"
	"math"
)

// Position identifies a record: a message id without batch index.
type Position struct {
	Ledger int64 `json:"ledgerId"`
	Entry  int64 `json:"entryId"`
}

// Earliest sorts before every record; a cursor at Earliest has consumed
// nothing.
var Earliest = Position{Ledger: -1, Entry: -1}

// Latest sorts after every record. Clients send it to mean "from now on".
var Latest = Position{Ledger: math.MaxInt64, Entry: math.MaxInt64}

// Compare orders positions: ledger first, then entry.
func (p Position) Compare(o Position) int {
	switch {
	case p.Ledger < o.Ledger:
		return -1
	case p.Ledger > o.Ledger:
		return 1
	case p.Entry < o.Entry:
		return -1
	case p.Entry > o.Entry:
		return 1
	}
	return 0
}

// Less reports whether p sorts before o.
func (p Position) Less(o Position) bool { return p.Compare(o) < 0 }

// Before returns a position that sorts just before p, so that the record at
// p is the first one after it.
func (p Position) Before() Position {
	return Position{Ledger: p.Ledger, Entry: p.Entry - 1}
}

// String formats p as Pulsar does: "ledger:entry".
func (p Position) String() string { return fmt.Sprintf("%d:%d", p.Ledger, p.Entry) }
