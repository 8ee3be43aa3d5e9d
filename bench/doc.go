// Package bench holds pgtandem's benchmarks: each measures a pgtandem path
// and the native PostgreSQL tool for the same job in the same run, and prints
// both figures and their ratio. They are benchmarks, not timed tests: run
// them with `make bench`.
//
// Switches: PGTANDEM_BENCH_TXNS sets the size of the pgbench backlog
// (default 100,000 transactions); PGTANDEM_BENCH_PIPELINE_PROFILE and
// PGTANDEM_BENCH_ALONE_PROFILE name files for CPU profiles of the apply
// benchmark's pipeline phase and of its broker2pg-alone phase only.
package bench
