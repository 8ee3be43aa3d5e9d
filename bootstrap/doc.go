// Package bootstrap makes a target ready for broker2pg: `pgtandem init`.
//
// # Copy mode
//
// For an empty target ([Copy]). The schema is copied with pg_dump in two
// steps: the tables first (pre-data), the indexes, constraints and triggers
// after the data (post-data, restored in parallel), because building an
// index once over all rows is much cheaper than maintaining it row by row.
// Between the two, the publication and the slot are created with an exported
// snapshot, every table is copied inside that snapshot with COPY streamed
// from source to target (no temporary files, Jobs tables at once, large
// tables in key ranges), and sequences are set. The slot's consistent point
// is then recorded in the target's pgtandem.apply_progress as the handoff:
// pg2broker streams from the slot, and broker2pg applies exactly what came
// after the copy, no gap, nothing twice.
//
// # Interrupted runs
//
// Init records its phase on the target in pgtandem.init_state (schema, copy,
// post-data, done) and every committed table, or key range of a split table,
// in pgtandem.init_tables, written in the same target transaction as the
// rows: what init_tables claims is on the target.
//
// A copy that stops (an error, Ctrl-C, kill -9) keeps the slot: the error
// ([InterruptedError]) says so, that it holds WAL, how to resume and how to
// give up. Running init again resumes: it keeps every table whose ranges
// were all committed, truncates the partly copied ones, and copies the rest
// in a new snapshot, exported by a temporary slot, since the first snapshot
// died with the first process. The permanent slot still holds every change
// since its consistent point L1, so the handoff stays L1; a table copied in
// the later snapshot at L2 already holds its own changes committed before
// L2, and gets a per-table handoff (pgtandem.table_handoff) below which
// broker2pg skips them. PostgreSQL's logical replication synchronises tables
// the same way. The unit of copy and handoff is the table as changes name
// it: all partitions of a partitioned table published through its root are
// kept or copied again together.
//
// What cannot be continued (a schema restore or post-data stopped halfway,
// the slot dropped, invalidated or streamed from) is a [CleanupError] that
// lists the exact steps to start over. A finished init run again says so
// ([Result].AlreadyDone) and changes nothing.
//
// # Clone mode
//
// For a target built from a physical copy of the source: [PrepareClone]
// creates publication and slot and returns where the copy's recovery must
// stop, [FinishClone] records the handoff on the promoted copy.
package bootstrap
