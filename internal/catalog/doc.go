// Package catalog is the one home of what pgtandem names and keeps in the
// clusters it works on:
//
//   - the names derived from a cluster's name in the configuration: its
//     replication slot, its Pulsar topic and producer, the replication
//     origin and subscription of a direction ([SlotName], [Topic],
//     [OriginName], [SubscriptionName]), and the one publication every slot
//     decodes ([PublicationName]);
//   - the pgtandem schema with every bookkeeping table, created and brought
//     up to date by [Migrate] under a recorded schema version, so that a
//     later pgtandem adds tables by adding a migration;
//   - the source preflight ([PrepareSource]) that capture and init share;
//   - the session settings that fix values' text forms, pinned on every
//     connection that reads or writes values ([TextSettings],
//     [PinTextSettings]);
//   - the apply-progress and per-table handoff stores ([ReadProgress],
//     [EnsureProgress], [RecordHandoff], [RecordTableHandoffs]) that apply,
//     init and status share.
//
// Capture (pg2broker) and apply (broker2pg) both depend on this package and
// never on each other.
package catalog
