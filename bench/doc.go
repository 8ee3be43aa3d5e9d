// Package bench holds pgtandem's benchmarks: each measures a pgtandem path
// and the native PostgreSQL tool for the same job in the same run, and prints
// both figures and their ratio. They are benchmarks, not timed tests: run
// them with `make bench`.
package bench
