// Package pg2broker captures the committed changes of one PostgreSQL database
// and publishes them, in commit order, to that cluster's Pulsar topic.
//
// # What it holds
//
// Logical decoding with the pgoutput plugin (through pglogrepl) from a slot
// created by `pgtandem init`, one frame (event format 2, package event) per
// transaction, or fragments of a large one, published by a named producer.
// A restarted capture reads the header of the topic's last frame and skips
// what the topic holds, continuing a half-published transaction at its next
// fragment; broker deduplication drops what a producer resends when it
// reconnects inside one run.
//
// # Why the confirmed LSN lags the stream
//
// The flush position reported to PostgreSQL is always explicit and is the end
// LSN of the last transaction whose messages the broker has acknowledged. A
// crash at any moment therefore replays from a position whose data is durable
// in the broker, never past it.
package pg2broker
