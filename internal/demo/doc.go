// Package demo is `pgtandem demo`: a whole upgrade rehearsal from
// PostgreSQL 15 to 17 on one machine, built from the same pieces users run
// in production, so that a newcomer sees the product work before reading
// how to configure it.
//
// # What a run does
//
// [Run] starts PostgreSQL 15 ("old") and 17 ("new") with [pglocal] and the
// built-in broker in-process, all under Options.Dir (wiped first, so every
// run starts clean). It creates a sample application database on old —
// pgbench's tables from Debian's `pgbench -i`, a table of varied types, a
// table without key (REPLICA IDENTITY FULL) and a partitioned table — and
// runs a rate-limited pgbench-style write load on it for the whole
// rehearsal. Under that load it runs the initial copy ([bootstrap.Copy]),
// then capture ([pg2broker]) and apply ([broker2pg]), waits until new has
// caught up, pauses the load, waits for a marker row written on old to
// reach new, and runs [verify]. It ends with a [Summary] on Options.Out and
// report.html, the summary plus charts of lag and throughput.
//
// # Measures
//
// Every 500 ms a sampler reads the lag, now minus the source commit time of
// the last transaction applied (pgtandem.apply_progress.commit_time via
// [catalog.ReadProgress]), and the applied throughput, counted with the
// load's own counter table: each load transaction inserts its sequence
// number into load_ticks and the load remembers the rows each changed, so
// the highest number on new says exactly how many rows have been applied.
//
// # Stopping
//
// Every process and goroutine a run starts is stopped before Run returns,
// also when ctx is cancelled (Ctrl-C): services first, then the broker, then
// both servers. With Options.Keep the run waits for ctx instead, leaving
// servers, broker and pipeline running and a ready pgtandem.yaml for trying
// the other commands by hand.
package demo
