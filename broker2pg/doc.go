// Package broker2pg applies one cluster's Pulsar topic to another PostgreSQL
// cluster: whole source transactions, in commit order, with an exactly-once
// effect.
//
// # What it will hold
//
// A Failover subscription whose messages are applied inside target
// transactions that also update pgtandem.apply_progress (the source commit LSN
// and message id), so a replay after any crash is skipped by the stored
// position. The apply session carries a replication origin named
// pgtandem_<from> so the target's own capture never echoes these changes back.
package broker2pg
