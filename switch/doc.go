// Package switchover runs the maintenance-window switch from one cluster to
// the other, and rollback as the same switch in the opposite direction.
//
// The folder is named switch/ after the operation; the package cannot be,
// because switch is a Go keyword.
//
// Both directions of pgtandem run all the time (capture and apply each
// way), so a switch starts and stops no process: it moves the clients'
// writes, and the reverse flow then carries them to the former source,
// which stays ready for a rollback. docs/runbook.md is the operator's
// procedure; this comment is the map of the code.
//
// # The steps
//
// [Run] takes an advisory lock on both clusters (a second switch is an
// [*InProgressError]), then runs the preflight, which changes nothing for
// clients: every PgBouncer reachable, not paused and pointing at the
// source; neither apply blocked; the source not fenced already; every
// sequence of the source present on the target; no client transaction on
// the source older than [Config].MaxTransactionAge; nobody but pgtandem
// writing on the target; and a marker round trip each way, the forward one
// under [Config].MaxLag, the reverse one proving the rollback path. A
// refusal is a [*PreflightError] naming its check. Then, each step
// journaled as it starts and ends:
//
//   - [StepFence]: the write pause starts. PAUSE on every PgBouncer at once,
//     all or nothing ([FencePgBouncer]); the source's database made
//     read-only for new sessions and its client sessions terminated
//     ([FenceDatabase]); the operator's command ([FenceHook]). pgtandem's
//     own sessions are never fenced.
//   - [StepMarker]: a row in pgtandem.switch_marker on the source, awaited
//     on the target until the apply committed it: the target then holds
//     everything the source committed.
//   - [StepSequences]: last_value and is_called of every sequence read on
//     the fenced source and set exactly on the target, one statement each.
//     Both happen while the marker travels (the read on the source, the
//     setval with the target's next look for the marker); this step sets
//     them only when the marker arrived first.
//   - [StepUnfence]: the cut row (package cursor) written on the target,
//     before anything else can write there; then the target's own fence,
//     left by an earlier switch away from it, lifted.
//   - [StepRedirect]: PgBouncer pointed at the target ([RedirectPgBouncer]),
//     or the operator's command ([RedirectHook]), or nothing
//     ([RedirectNone]).
//   - [StepResume]: RESUME, the queued transactions run on the target. The
//     write pause ends; this is the point of no return. With the pgbouncer
//     fence the switch then waits until no client waits in PgBouncer
//     ([Report].CaughtUp, at most 2 s) before it goes on: the rest is not
//     urgent, the queued clients are.
//   - [StepCursor]: the cut row's frame found in the target's topic
//     ([Options].Pulsar); with [Config].PrepareSubscriptions, each
//     downstream subscription of the source's topic created on the
//     target's at the cut; then the hop row written on the source, which
//     moves the source topic's consumers. A failure leaves the switch
//     running ([*CutNotRecordedError]) for [Resume].
//
// [DryRun] runs the preflight and the other read paths and probes that
// fence nothing, and estimates the pause. The [Report] gives every step's
// times, the write pause, the marker's position and the reverse cut, as
// text, JSON or an HTML timeline.
//
// # The journal
//
// pgtandem.switches (one row per switch: running, done, undone or aborted,
// with its report) and pgtandem.switch_steps (each step's start and end)
// are written on both clusters; they are bookkeeping tables, which capture
// leaves out. A switch whose process died is still recorded as running:
// [Resume] finishes it (past the point of no return it only resumes
// clients; before it, it runs the steps again from the fence, each of which
// can run again), and [Abort] undoes it, which it refuses past the point of
// no return ([*PastPointOfNoReturnError]).
//
// # The undo
//
// [Config].Deadline bounds the steps from the fence to the redirect. On
// expiry, or on any failure before the RESUME, the switch undoes itself and
// returns an [*UndoneError]: PgBouncer pointed back at the source, the
// target fenced again if it was, and only then the source unfenced and the
// clients resumed on it, so that at no moment can clients commit on both
// clusters. An undo that cannot point PgBouncer back or fence the target
// again leaves the source fenced and the clients paused, and returns an
// [*UndoFailedError]; a RESUME that fails past the point of no return is a
// [*NotResumedError].
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
