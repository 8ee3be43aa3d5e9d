// Package broker2pg applies one cluster's Pulsar topic to another PostgreSQL
// cluster: whole source transactions, in commit order, with an exactly-once
// effect.
//
// # Exactly once
//
// The broker's cursor cannot be moved in the same transaction as the target's
// data, so the target records its own position: pgtandem.apply_progress holds,
// per source, the commit LSN and message id of the last applied source
// transaction, updated in the very target transaction that applied it. Each
// target transaction starts by locking that row (a second applier waits, then
// sees the first one's position) and the messages are acknowledged only after
// COMMIT. A crash between COMMIT and the acknowledgement leads to a
// redelivery that the stored position skips; a redelivery inside a run is
// skipped by (lsn, seq). A target running with synchronous_commit = off is
// committed with synchronous_commit = local by the apply session, so nothing
// the target can still lose is acknowledged.
//
// # Throughput
//
// While a backlog lasts, one target transaction takes many source
// transactions (bounded by [Config] GroupRows, GroupBytes, GroupDelay) and
// their changes are turned into few set-based statements (see plan): the
// changes of one row are compacted to their net effect, and all rows of a
// table go into one statement over unnest()ed text arrays, sent pipelined in
// one round trip. A large source transaction is flushed to the target every
// FlushRows changes, never held in memory, and committed at its COMMIT.
//
// # Values
//
// Values arrive as PostgreSQL text and are cast from text to the target
// column's type, so every type goes through its own input function and
// round-trips byte for byte. Tables without key (REPLICA IDENTITY FULL) are
// matched by the text form of the whole row, which finds rows in one hash
// join per batch instead of a scan per row, and deletes exactly as many
// duplicates as the source did.
//
// # Echo and fencing
//
// The apply session carries the replication origin pgtandem_<source>, so
// the target's own pg2broker drops these transactions; it runs with
// session_replication_role = replica like PostgreSQL's apply worker (no
// triggers, no foreign key checks: the source ran them) and with
// default_transaction_read_only = off, because a fenced database is read-only
// for applications, not for the apply.
//
// # Stopping loudly
//
// A change the target cannot take (missing table or column, a value its type
// refuses, an undecodable message) is a [BlockedError] naming the table,
// column and message id: nothing past it is acknowledged, the reason is
// written to apply_progress for `pgtandem status`, /readyz reports it, and
// the service retries every BlockedRetry until the target is fixed.
package broker2pg
