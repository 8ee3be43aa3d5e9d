// Package store keeps the broker's data on disk: one append-only [Log] per
// topic and one cursor file per durable subscription ([CursorStore]).
//
// # Log
//
// A topic's log is a directory of segment files, NNNNNNNNNNNNNNNNNNNN.log,
// where the number is the segment's ledger id. A message id is (ledger id,
// index of the record in the segment), so ids stay the same across restarts.
// Each record is [length uint32][crc32c uint32][body]; the body holds the
// publish time, producer name and sequence ids the broker needs, then the
// payload section exactly as the producer sent it (metadata, batches,
// compression and chunk fields untouched).
//
// Appends go through one writer goroutine per log that commits in groups:
// everything queued while the previous fsync ran is written and fsynced
// together, and only then are the records readable and the callers told.
// A record that a crash left half-written at the end of the last segment is
// cut off when the log is opened.
//
// # Deduplication
//
// The writer also keeps, per producer name, the highest sequence id stored;
// a record whose sequence id is not above it is reported as a duplicate and
// not written. That state is rebuilt from the records when the log opens,
// and snapshotted to dedup.json before retention deletes a segment.
//
// # Cursors
//
// A cursor file holds a subscription's mark-delete position, the records
// acknowledged individually beyond it, and the still-unacknowledged messages
// of partly acknowledged batches. It is rewritten whole (temporary file,
// fsync, rename, directory fsync), so after a crash it is either the old or
// the new state.
package store
