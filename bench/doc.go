// Package bench holds pgtandem's benchmarks: each measures a pgtandem path
// and the native PostgreSQL tool for the same job in the same run, and prints
// both figures and their ratio. They are benchmarks, not timed tests: run
// them with `make bench`.
//
// BenchmarkSwitchPause measures the client-visible write pause of ten
// `pgtandem switch` runs back and forth at 500 TPS through PgBouncer, beside
// a scripted native switch (PAUSE, wait for the subscription's replay LSN,
// setval, repoint, RESUME) measured on the same servers in the same run:
// five pgtandem switches, the ten native ones, then five pgtandem switches
// more, so that a machine whose speed drifts during the run favours
// neither. After each RESUME both wait until no client waits in PgBouncer
// and print how long that took.
//
// Switches: PGTANDEM_BENCH_TXNS sets the size of the pgbench backlog
// (default 100,000 transactions); PGTANDEM_BENCH_PIPELINE_PROFILE and
// PGTANDEM_BENCH_ALONE_PROFILE name files for CPU profiles of the apply
// benchmark's pipeline phase and of its broker2pg-alone phase only, and
// PGTANDEM_BENCH_CAPTURE_PROFILE one of the capture benchmark's pg2broker
// phase.
package bench
