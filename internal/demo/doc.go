// Package demo is `pgtandem demo`: a whole upgrade rehearsal from
// PostgreSQL 15 to 17 on one machine, maintenance window included, built
// from the same pieces users run in production, so that a newcomer sees the
// product work before reading how to configure it.
//
// # What a run does
//
// [Run] starts PostgreSQL 15 ("old") and 17 ("new") with [pglocal], a real
// PgBouncer in front of old in transaction pooling with [pgbouncerlocal],
// and the built-in broker in-process, all under Options.Dir (wiped first,
// so every run starts clean). It creates a sample application database on
// old — pgbench's tables from Debian's `pgbench -i`, a table of varied
// types, a table without key (REPLICA IDENTITY FULL) and a partitioned
// table — and runs a rate-limited pgbench-style write load on it through
// PgBouncer, the application's only way in. Under that load it runs the
// initial copy ([bootstrap.Copy]), then capture ([pg2broker]) and apply
// ([broker2pg]), waits until new has caught up, pauses the load, waits for
// a marker row written on old to reach new, and runs [verify].
//
// Then the maintenance window: it arms the reverse flow (pg2broker on new,
// creating its slot, and broker2pg from new to old), resumes the load, and
// runs [switchover.Run] from old to new under it, PgBouncer paused and old
// fenced; the load writes on new for a few seconds, its writes reaching
// old through the reverse flow, and a second switch rolls back to old. The
// load stops, a marker row proves new caught up again, and verify runs
// once more. It ends with a [Summary] on Options.Out, report.html (the
// summary, charts of lag and throughput, and each switch's timeline) and
// each switch's own page.
//
// # Measures
//
// Every 500 ms a sampler reads the lag, now minus the source commit time of
// the last transaction applied (pgtandem.apply_progress.commit_time via
// [catalog.ReadProgress]), and the applied throughput, counted with the
// load's own counter table: each load transaction inserts its sequence
// number into load_ticks and the load remembers the rows each changed, so
// the highest number on the other cluster says exactly how many rows have
// been applied. After the switch the sampler reads old, where new's writes
// are applied.
//
// The load records each client transaction, from when it was due (it runs
// on a schedule, as pgbench --rate does) to when it ended, and whether it
// failed: around each switch the summary shows the longest, and over the
// whole run how many failed. A switch must only make clients wait, so a
// failed transaction, like a difference found by verify, ends the run
// with an error once the summary and report are written.
//
// # Stopping
//
// Every process and goroutine a run starts is stopped before Run returns,
// also when ctx is cancelled (Ctrl-C): the load, the services, PgBouncer,
// the broker, then both servers. With Options.Keep the run waits for ctx
// instead, leaving servers, PgBouncer, broker and both directions running
// and a ready pgtandem.yaml (switch section included) for trying the other
// commands by hand.
package demo
