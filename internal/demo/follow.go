package demo

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// markerTimeout bounds the wait for the marker row once the load is paused.
const markerTimeout = 2 * time.Minute

// follow waits while new catches up and then follows old under the load
// until loadEnd, pauses the load, and waits until a marker row written on
// old after the last load transaction is on new.
func follow(ctx context.Context, opts Options, env *environment, load *writeLoad, mon *monitor, sum *Summary, loadEnd time.Time) error {
	applyStart := time.Now()
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		lag, ok := mon.lastLag()
		return ok && lag < caughtUpLag, nil
	})
	if err != nil {
		return err
	}
	sum.CatchUp, sum.CaughtUp = time.Since(applyStart), time.Since(mon.started)
	mon.setPhase(PhaseSteady)
	mon.step("caught up in %s: new follows old with lag under %s", fmtDuration(sum.CatchUp), caughtUpLag)

	err = poll(ctx, 100*time.Millisecond, func() (bool, error) { return time.Now().After(loadEnd), nil })
	if err != nil {
		return err
	}
	// A few seconds in tandem at least, also when the copy took most of
	// the load's time.
	if steady := time.Since(applyStart) - sum.CatchUp; steady < 3*time.Second {
		if err := sleep(ctx, 3*time.Second-steady); err != nil {
			return err
		}
	}
	load.stop()
	sum.LoadPaused = time.Since(mon.started)
	sum.LoadTransactions, sum.LoadRows = load.committed()
	mon.setPhase(PhaseDrain)
	mon.step("load paused after %d transactions (%d rows)", sum.LoadTransactions, sum.LoadRows)
	return waitMarker(ctx, opts, env, mon, sum, 1)
}

// waitMarker writes marker row id on old, where the load wrote last, and
// waits until it is on new: then new holds everything old committed.
func waitMarker(ctx context.Context, opts Options, env *environment, mon *monitor, sum *Summary, id int) error {
	written := time.Now()
	if err := execSQL(ctx, env.old.DSN(appDatabase), fmt.Sprintf(`INSERT INTO demo_marker (id) VALUES (%d)`, id)); err != nil {
		return fmt.Errorf("write the marker row on old: %w", err)
	}
	conn, err := pgx.Connect(ctx, env.new.DSN(appDatabase))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	markerCtx, cancel := context.WithTimeout(ctx, markerTimeout)
	defer cancel()
	err = poll(markerCtx, 50*time.Millisecond, func() (bool, error) {
		var n int
		err := conn.QueryRow(markerCtx, `SELECT count(*) FROM demo_marker WHERE id = $1`, id).Scan(&n)
		return err == nil && n == 1, nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("the marker row written on old did not reach new within %s: see %s and `pgtandem status --config %s`",
			markerTimeout, sum.Log, configPath(opts.Dir))
	}
	if err != nil {
		return err
	}
	mon.step("marker row written on old reached new after %s: new holds everything old committed", fmtDuration(time.Since(written)))
	return nil
}

// poll calls check every interval until it reports done or an error, or
// ctx ends.
func poll(ctx context.Context, interval time.Duration, check func() (bool, error)) error {
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		if err := sleep(ctx, interval); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// lagPercentiles returns p50 and p99 of the lag while in tandem.
func lagPercentiles(samples []Sample) (p50, p99 time.Duration) {
	var lags []time.Duration
	for _, s := range samples {
		if s.Phase == PhaseSteady && s.HasLag {
			lags = append(lags, s.Lag)
		}
	}
	if len(lags) == 0 {
		return 0, 0
	}
	slices.Sort(lags)
	at := func(q float64) time.Duration { return lags[min(int(q*float64(len(lags))), len(lags)-1)] }
	return at(0.50), at(0.99)
}
