// Package switchover runs the maintenance-window switch from one cluster to
// the other, and rollback as the same switch in the opposite direction.
//
// The folder is named switch/ after the operation; the package cannot be,
// because switch is a Go keyword.
//
// # What it will hold
//
// The steps a team once ran by hand: fence writes on the old primary, write a
// marker row and wait for it on the new side, set every sequence (logical
// decoding does not carry them), start the reverse flow so rollback stays
// possible, and redirect clients.
//
// # Redirecting clients through PgBouncer
//
// Clients reach the database through PgBouncer in transaction pooling. The
// switch holds their transactions with [PgBouncer.Pause], which returns once
// no transaction runs and queues every new one; points the bouncer at the
// other cluster with [PgBouncer.Redirect], which rewrites the file that
// pgbouncer.ini %includes in its [databases] section, holding only the
// database's entry ([WriteDatabaseEntry]), and reloads it; and lets the
// queue go with [PgBouncer.Resume]. Queued clients see a delay, not an
// error. A PAUSE that cannot complete in time (a client idle in transaction)
// is undone and reported as a [*PauseTimeoutError]. [PgBouncer.Pools] and
// [PgBouncer.Databases] read what the bouncer shows on its console.
package switchover
