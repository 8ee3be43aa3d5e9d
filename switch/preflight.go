package switchover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// preflight checks, changing nothing for clients, that the switch can
// complete within its deadline: every PgBouncer reachable and pointing at
// the source, neither apply blocked, the source not fenced, every sequence
// of the source present on the target, no long transaction on the source,
// no writer on the target, and marker round trips both ways (the forward
// one under MaxLag).
func (s *switcher) preflight(ctx context.Context) error {
	if err := s.checkBouncers(ctx); err != nil {
		return err
	}
	for _, sess := range []*session{s.from, s.to} {
		if err := s.checkPrivileges(ctx, sess); err != nil {
			return err
		}
	}
	if fenced, err := s.from.fenced(ctx); err != nil {
		return err
	} else if fenced && s.cfg.has(FenceDatabase) {
		return &PreflightError{Check: "fence", Detail: fmt.Sprintf("%s is fenced (default_transaction_read_only = on for its database): clients do not write there; is the switch in the wrong direction?", s.cfg.From.Name)}
	}
	for _, pair := range [][2]*session{{s.to, s.from}, {s.from, s.to}} {
		if err := checkApply(ctx, pair[0], pair[1].name); err != nil {
			return err
		}
	}
	if err := s.checkSequences(ctx); err != nil {
		return err
	}
	if err := s.checkTransactions(ctx); err != nil {
		return err
	}
	if err := s.checkWriters(ctx); err != nil {
		return err
	}
	var err error
	if s.rep.ForwardProbe, err = s.probe(ctx, s.from, s.to); err != nil {
		return &PreflightError{Check: "lag", Detail: fmt.Sprintf("the forward flow %s -> %s did not carry a marker: %v (are pg2broker --from %s and broker2pg --from %s --to %s running?)",
			s.cfg.From.Name, s.cfg.To.Name, err, s.cfg.From.Name, s.cfg.From.Name, s.cfg.To.Name)}
	}
	if s.rep.ForwardProbe > s.cfg.MaxLag {
		return &PreflightError{Check: "lag", Detail: fmt.Sprintf("a marker took %s from %s to %s, more than switch.max-lag %s", s.rep.ForwardProbe.Round(time.Millisecond),
			s.cfg.From.Name, s.cfg.To.Name, s.cfg.MaxLag)}
	}
	if s.rep.ReverseProbe, err = s.probe(ctx, s.to, s.from); err != nil {
		return &PreflightError{Check: "reverse-flow", Detail: fmt.Sprintf("the reverse flow %s -> %s is not armed: %v (start pg2broker --from %s --create-slot and broker2pg --from %s --to %s before the window, so that rollback stays possible)",
			s.cfg.To.Name, s.cfg.From.Name, err, s.cfg.To.Name, s.cfg.To.Name, s.cfg.From.Name)}
	}
	return nil
}

// checkBouncers reads every PgBouncer's SHOW DATABASES and SHOW POOLS: the
// database must be there, not paused, and (for the pgbouncer redirect)
// point at the source.
func (s *switcher) checkBouncers(ctx context.Context) error {
	s.loginRetry = make([]string, len(s.bouncers))
	for i, b := range s.bouncers {
		retry, err := b.Setting(ctx, "server_login_retry")
		if err != nil {
			return &PreflightError{Check: "pgbouncer", Detail: err.Error()}
		}
		s.loginRetry[i] = retry
		d, err := b.Database(ctx, s.cfg.PgBouncer.Database)
		if err != nil {
			return &PreflightError{Check: "pgbouncer", Detail: err.Error()}
		}
		if d == nil {
			return &PreflightError{Check: "pgbouncer", Detail: fmt.Sprintf("%s has no database %s in SHOW DATABASES", b, s.cfg.PgBouncer.Database)}
		}
		if d.Paused {
			return &PreflightError{Check: "pgbouncer", Detail: fmt.Sprintf("%s has database %s paused already", b, d.Name)}
		}
		from := s.cfg.From.Entry
		if s.cfg.Redirect == RedirectPgBouncer && (d.Host != from.Host || d.Port != from.Port || (from.DBName != "" && d.DBName != from.DBName)) {
			return &PreflightError{Check: "pgbouncer", Detail: fmt.Sprintf("%s sends database %s to %s:%d/%s, not to %s (%s): clients do not write on %s; is the switch in the wrong direction?",
				b, d.Name, d.Host, d.Port, d.DBName, s.cfg.From.Name, from, s.cfg.From.Name)}
		}
		if _, err := b.Pools(ctx); err != nil {
			return &PreflightError{Check: "pgbouncer", Detail: err.Error()}
		}
	}
	return nil
}

// checkApply refuses while target's apply of source is blocked.
func checkApply(ctx context.Context, target *session, source string) error {
	var reason string
	err := target.conn.QueryRow(ctx, `SELECT coalesce(blocked_reason, '') FROM pgtandem.apply_progress WHERE source_cluster = $1`, source).Scan(&reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // not started yet: the marker probes tell whether it runs
	}
	if err != nil {
		return fmt.Errorf("cluster %s: read apply_progress: %w", target.name, err)
	}
	if reason != "" {
		return &PreflightError{Check: "apply", Detail: fmt.Sprintf("broker2pg --from %s --to %s is blocked: %s", source, target.name, reason)}
	}
	return nil
}

// checkSequences lists the source's sequences and refuses when one is
// missing on the target.
func (s *switcher) checkSequences(ctx context.Context) error {
	if err := s.prepareSequences(ctx); err != nil {
		return err
	}
	onTarget, err := s.to.listSequences(ctx)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(onTarget))
	for _, name := range onTarget {
		present[name] = true
	}
	var missing []string
	for _, name := range s.seqNames {
		if !present[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return &PreflightError{Check: "sequences", Detail: fmt.Sprintf("%d sequences of %s are missing on %s: %s", len(missing), s.cfg.From.Name, s.cfg.To.Name, strings.Join(missing, ", "))}
	}
	if _, err := s.from.readSequences(ctx, s.seqNames); err != nil {
		return &PreflightError{Check: "sequences", Detail: err.Error()}
	}
	return nil
}

// checkTransactions refuses while a client transaction on the source is
// older than MaxTransactionAge: the PAUSE would wait for it.
func (s *switcher) checkTransactions(ctx context.Context) error {
	rows, err := s.from.conn.Query(ctx, `SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), state, extract(epoch FROM now() - xact_start)
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
		  AND xact_start < now() - make_interval(secs => $1) AND coalesce(application_name, '') NOT LIKE 'pgtandem%' ORDER BY xact_start`,
		s.cfg.MaxTransactionAge.Seconds())
	if err != nil {
		return fmt.Errorf("cluster %s: read pg_stat_activity: %w", s.from.name, err)
	}
	var found []string
	var pid int
	var user, app, state string
	var age float64
	_, err = pgx.ForEachRow(rows, []any{&pid, &user, &app, &state, &age}, func() error {
		found = append(found, fmt.Sprintf("pid %d (%s, %q, %s) for %.1f s", pid, user, app, state, age))
		return nil
	})
	if err != nil {
		return fmt.Errorf("cluster %s: read pg_stat_activity: %w", s.from.name, err)
	}
	if len(found) > 0 {
		return &PreflightError{Check: "transactions", Detail: fmt.Sprintf("transactions on %s older than switch.max-transaction-age %s would hold the fence: %s",
			s.from.name, s.cfg.MaxTransactionAge, strings.Join(found, "; "))}
	}
	return nil
}

// checkWriters refuses while a session other than pgtandem's holds a
// transaction id on the target: something writes there, and the reverse
// flow would carry it to the source.
func (s *switcher) checkWriters(ctx context.Context) error {
	var n int
	var who string
	err := s.to.conn.QueryRow(ctx, `SELECT count(*), coalesce(string_agg(format('pid %s (%s, %L)', pid, usename, application_name), '; '), '')
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
		  AND backend_type = 'client backend' AND coalesce(application_name, '') NOT LIKE 'pgtandem%'`).Scan(&n, &who)
	if err != nil {
		return fmt.Errorf("cluster %s: read pg_stat_activity: %w", s.to.name, err)
	}
	if n > 0 {
		return &PreflightError{Check: "writers", Detail: fmt.Sprintf("%d sessions write on %s before the switch: %s", n, s.to.name, who)}
	}
	return nil
}

// probe writes a marker on src and times its arrival on dst.
func (s *switcher) probe(ctx context.Context, src, dst *session) (time.Duration, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.ProbeTimeout, fmt.Errorf("not applied within switch.probe-timeout %s", s.cfg.ProbeTimeout))
	defer cancel()
	id := "probe-" + newID()
	start := time.Now()
	if _, err := src.writeMarker(ctx, id); err != nil {
		return 0, err
	}
	if _, _, err := dst.waitMarker(ctx, id, src.name, nil); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// journalWritable writes a step record in a transaction it rolls back.
func (s *session) journalWritable(ctx context.Context) error {
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO pgtandem.switch_steps (switch_id, step, started_at) VALUES ('dry-run', 'dry-run', now())`); err != nil {
		return fmt.Errorf("cluster %s: %w", s.name, err)
	}
	return nil
}

// checkPrivileges refuses a role that could not do the switch's work on a
// cluster (either side: a rollback runs the other way): see every session
// and terminate it (pg_read_all_stats, pg_signal_backend; without the first
// PostgreSQL hides other roles' sessions, so the checks and the fence would
// miss them), and ALTER DATABASE for the database fence (the owner).
func (s *switcher) checkPrivileges(ctx context.Context, sess *session) error {
	var super, stats, signal, owner bool
	err := sess.conn.QueryRow(ctx, `SELECT r.rolsuper, pg_has_role(current_user, 'pg_read_all_stats', 'member'),
		pg_has_role(current_user, 'pg_signal_backend', 'member'), d.datdba = r.oid
		FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`).Scan(&super, &stats, &signal, &owner)
	if err != nil {
		return fmt.Errorf("cluster %s: read the role's privileges: %w", sess.name, err)
	}
	var missing []string
	if !super && !stats {
		missing = append(missing, "pg_read_all_stats")
	}
	if !super && !signal {
		missing = append(missing, "pg_signal_backend")
	}
	if !super && !owner && s.cfg.has(FenceDatabase) {
		missing = append(missing, "ownership of the database (ALTER DATABASE for the database fence)")
	}
	if len(missing) > 0 {
		return &PreflightError{Check: "privileges", Detail: fmt.Sprintf("the role of %s's DSN lacks %s: grant them or use a superuser", sess.name, strings.Join(missing, ", "))}
	}
	return nil
}
