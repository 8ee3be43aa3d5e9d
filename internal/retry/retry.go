// Package retry is the one backoff policy of pgtandem's services: after a
// transient failure (a server or the broker unreachable, a connection cut)
// they wait a growing, jittered delay, so that many replicas or both
// directions restarting together do not retry in lockstep.
package retry

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// First is the delay after the first failure.
const First = 500 * time.Millisecond

// healthy is how long an attempt must have run for the next failure to
// start the delays over.
const healthy = time.Minute

// Backoff gives the delays between attempts: from First, doubling, up to a
// maximum, each randomised by ±50%. Not safe for concurrent use.
type Backoff struct {
	exp *backoff.ExponentialBackOff
}

// New returns a Backoff whose delays grow up to max.
func New(max time.Duration) *Backoff {
	exp := backoff.NewExponentialBackOff()
	exp.InitialInterval = First
	exp.Multiplier = 2
	exp.RandomizationFactor = 0.5
	exp.MaxInterval = max
	exp.Reset()
	return &Backoff{exp: exp}
}

// Next returns the delay before the next attempt, given how long the
// attempt that just failed had run: one that ran long enough to be healthy
// starts the delays over.
func (b *Backoff) Next(ran time.Duration) time.Duration {
	if ran >= healthy {
		b.exp.Reset()
	}
	return b.exp.NextBackOff()
}
