// Package devbroker is a single-node broker that speaks Apache Pulsar's binary
// protocol well enough that pulsar-client-go cannot tell it from Pulsar for
// everything pgtandem uses. Production runs Apache Pulsar through the very
// same client code; this broker exists for development, CI and rehearsals,
// where no JVM can run. See docs/broker.md for the supported surface.
//
// # Layers
//
// [github.com/pgtandem/pgtandem/devbroker/wire] frames and decodes
// commands; [github.com/pgtandem/pgtandem/devbroker/store] keeps topic
// logs and cursors on disk; this package ties them together: a [Server]
// accepts connections (one read loop and one write loop each), a topic
// registry creates topics on first use, and each subscription has a
// dispatcher goroutine that pushes records to consumers as flow permits
// allow.
//
// # Durability
//
// A send receipt leaves only after the record is fsynced, with one fsync per
// group of concurrent appends. Consumers never see a record before that.
// Acknowledgments are applied to the subscription's cursor and the cursor is
// fsynced before the next command of the connection is read, so a broker
// killed at any point redelivers only what was never acknowledged.
//
// # Lifecycle
//
// Every goroutine is started through the server's startGoroutine and ends
// when the server's quit channel closes or its connection closes;
// [Server.Close] waits for all of them. [Run] is the composition root used by
// "pgtandem broker serve".
package devbroker
