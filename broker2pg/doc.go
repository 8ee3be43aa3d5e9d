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
// skipped by (lsn, seq). Target transactions commit with synchronous_commit
// = off, as native logical replication's apply worker does, and their
// messages are acknowledged only once the target's WAL is flushed past the
// commit (read with every commit; an idle apply has the target flush up to
// its replication origin's last commit): a crash of the target
// loses only commits whose messages the broker still holds. A target that
// waits for synchronous standbys commits as configured instead (off raised
// to on) and is acknowledged at commit, since a flush on the primary alone
// does not survive a failover.
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
//
// Every UPDATE and DELETE must change exactly one row, as on the source: a
// set-based statement carries the number of rows its changes must change,
// checked before COMMIT. When a statement of a batch fails or changes
// another number, the batch is applied again one change at a time in source
// order, each source transaction committed alone, so that the block names
// the exact change: a [MissingRowError] with its old key, commit LSN,
// position and message. An UPDATE published as REPLICA IDENTITY FULL
// without an old row (a partition with an identity of its own) is a
// [ReplicaIdentityError]: the apply never guesses a row. An operator may
// let the apply pass over exactly the change it is blocked at ([RecordSkip],
// `pgtandem apply skip`), which pgtandem.apply_skips records.
package broker2pg
