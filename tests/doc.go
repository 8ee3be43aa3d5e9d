// Package tests holds pgtandem's end-to-end suites: real PostgreSQL majors
// started by internal/pgtest, the real pulsar-client-go against the project's
// broker, and the pgtandem binary driven as a user would.
package tests
