// Package pg2broker captures the committed changes of one PostgreSQL database
// and publishes them, in commit order, to that cluster's Pulsar topic.
//
// # What it will hold
//
// Logical decoding with the pgoutput plugin (through pglogrepl) from a slot
// created by `pgtandem init`, one message per row change plus BEGIN and COMMIT
// messages per transaction, published by a named producer whose sequence ids
// follow the LSN order so that a resend after a crash is dropped by broker
// deduplication.
//
// # Why the confirmed LSN lags the stream
//
// The flush position reported to PostgreSQL is always explicit and is the end
// LSN of the last transaction whose messages the broker has acknowledged. A
// crash at any moment therefore replays from a position whose data is durable
// in the broker, never past it.
package pg2broker
