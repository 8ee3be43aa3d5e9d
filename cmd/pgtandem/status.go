package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/config"
)

// clusterStatus is the capture side of one cluster.
type clusterStatus struct {
	Cluster      string `json:"cluster"`
	Slot         string `json:"slot"`
	ConfirmedLSN string `json:"confirmed_lsn,omitempty"`
	LagBytes     *int64 `json:"lag_bytes,omitempty"`
	Error        string `json:"error,omitempty"`
}

// directionStatus is the apply side of one source → target pair.
type directionStatus struct {
	From           string   `json:"from"`
	To             string   `json:"to"`
	Topic          string   `json:"topic"`
	AppliedLSN     string   `json:"applied_lsn"`
	LastCommitTime string   `json:"last_commit_time,omitempty"`
	LagSeconds     *float64 `json:"lag_seconds,omitempty"`
	Backlog        *int64   `json:"backlog,omitempty"`
	BacklogError   string   `json:"backlog_error,omitempty"`
	Blocked        string   `json:"blocked,omitempty"`
}

type statusReport struct {
	Clusters   []clusterStatus   `json:"clusters"`
	Directions []directionStatus `json:"directions"`
}

func newStatusCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show slot positions, apply progress, lag and blocked reasons of every cluster and direction",
		Long: `status connects to every configured cluster and shows, per cluster, the position of its
capture slot (pgtandem_<cluster>) and how far it lags, and per direction (a target holding
pgtandem.apply_progress rows of a source) the last applied LSN, the lag (the age of the oldest
source change not applied: 0 when the subscription's backlog is empty, growing while the apply is
blocked; ? when the backlog cannot be read), the topic backlog of the subscription (from
pulsar.admin-url) and why the apply is blocked, if it is. It exits 1 when a cluster could not be
read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			report, err := collectStatus(cmd.Context(), a.cfg)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if encErr := enc.Encode(report); encErr != nil {
					return encErr
				}
			} else {
				printStatus(a.stdout, report)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

// collectStatus reads every cluster; a cluster that cannot be read is
// reported in its row and in the returned error, the others still are.
func collectStatus(ctx context.Context, cfg config.Config) (statusReport, error) {
	report := statusReport{Clusters: []clusterStatus{}, Directions: []directionStatus{}}
	names := make([]string, 0, len(cfg.Clusters))
	for name := range cfg.Clusters {
		names = append(names, name)
	}
	sort.Strings(names)
	readBacklog := backlogOf(cfg.Pulsar)
	var errs []error
	for _, name := range names {
		cs, dirs, err := clusterState(ctx, cfg, name, readBacklog)
		if err != nil {
			cs.Error = err.Error()
			errs = append(errs, fmt.Errorf("cluster %s: %w", name, err))
		}
		report.Clusters = append(report.Clusters, cs)
		report.Directions = append(report.Directions, dirs...)
	}
	return report, errors.Join(errs...)
}

// backlogFunc reads how many messages of topic the subscription has not
// acknowledged.
type backlogFunc func(ctx context.Context, topic, subscription string) (int64, error)

// backlogOf returns how status reads backlogs: from the admin API with the
// token the services give the broker, or failing with the reason it cannot.
func backlogOf(p config.Pulsar) backlogFunc {
	token, err := pulsarToken(p)
	var reader *broker2pg.BacklogReader
	if err == nil {
		reader, err = broker2pg.NewBacklogReader(p.AdminURL, token, pulsarTLS(p))
	}
	if err != nil {
		return func(context.Context, string, string) (int64, error) { return 0, err }
	}
	return reader.Backlog
}

func clusterState(ctx context.Context, cfg config.Config, name string, readBacklog backlogFunc) (clusterStatus, []directionStatus, error) {
	cs := clusterStatus{Cluster: name, Slot: catalog.SlotName(name)}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := catalog.Connect(ctx, cfg.Clusters[name].DSN.ConnString())
	if err != nil {
		return cs, nil, errors.New(config.Redact(err.Error(), cfg.Clusters[name].DSN.ConnString()))
	}
	defer conn.Close(context.Background())
	var confirmed *string
	var lag *int64
	err = conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, cs.Slot).Scan(&confirmed, &lag)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		cs.Slot += " (none)"
	case err != nil:
		return cs, nil, fmt.Errorf("read slot %s: %w", cs.Slot, err)
	case confirmed != nil:
		cs.ConfirmedLSN, cs.LagBytes = *confirmed, lag
	}
	progress, err := catalog.ReadProgress(ctx, conn)
	if err != nil {
		return cs, nil, err
	}
	var dirs []directionStatus
	for _, p := range progress {
		d := directionStatus{From: p.Source, To: name, Topic: p.Topic, AppliedLSN: p.CommitLSN.String(), Blocked: p.BlockedReason}
		var lastCommit time.Time
		if !p.CommitTime.IsZero() && p.CommitTime.Unix() != 0 {
			lastCommit = p.CommitTime
			d.LastCommitTime = p.CommitTime.UTC().Format(time.RFC3339Nano)
		}
		if backlog, err := readBacklog(ctx, p.Topic, catalog.SubscriptionName(name)); err != nil {
			d.BacklogError = err.Error()
		} else {
			d.Backlog = &backlog
		}
		var blocked broker2pg.BlockedAt
		if p.BlockedReason != "" {
			if blocked, err = broker2pg.ReadBlockedAt(ctx, conn, p.Source); err != nil {
				return cs, nil, err
			}
		}
		d.LagSeconds = applyLag(lastCommit, blocked, d.Backlog, time.Now())
		dirs = append(dirs, d)
	}
	return cs, dirs, nil
}

// applyLag is the age of the oldest source change the target has not
// applied, nil when status cannot tell. Blocked, it is the age of the
// oldest transaction held back (or, when the target did not record it, of
// the last one applied, which is older). Not blocked, it is 0 when the
// subscription's backlog is empty (caught up and idle), else the age of the
// last applied transaction, which the oldest pending one is not older than;
// without a backlog, caught up and behind cannot be told apart.
func applyLag(lastCommit time.Time, blocked broker2pg.BlockedAt, backlog *int64, now time.Time) *float64 {
	age := func(since time.Time) *float64 {
		if since.IsZero() {
			return nil
		}
		s := max(now.Sub(since).Seconds(), 0)
		return &s
	}
	switch {
	case blocked.Reason != "" && !blocked.CommitTime.IsZero():
		return age(blocked.CommitTime)
	case blocked.Reason != "":
		return age(lastCommit)
	case backlog == nil:
		return nil
	case *backlog == 0:
		zero := 0.0
		return &zero
	default:
		return age(lastCommit)
	}
}

func printStatus(w io.Writer, r statusReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tSLOT\tCONFIRMED LSN\tLAG BYTES\tERROR")
	for _, c := range r.Clusters {
		lag := "-"
		if c.LagBytes != nil {
			lag = fmt.Sprint(*c.LagBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Cluster, c.Slot, dash(c.ConfirmedLSN), lag, dash(c.Error))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "FROM\tTO\tAPPLIED LSN\tLAG SECONDS\tBACKLOG\tBLOCKED")
	for _, d := range r.Directions {
		lag, backlog := "?", "?"
		if d.LagSeconds != nil {
			lag = fmt.Sprintf("%.3f", *d.LagSeconds)
		}
		if d.Backlog != nil {
			backlog = fmt.Sprint(*d.Backlog)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.From, d.To, d.AppliedLSN, lag, backlog, dash(strings.ReplaceAll(d.Blocked, "\n", " ")))
	}
	if len(r.Directions) == 0 {
		fmt.Fprintln(tw, "(no target holds pgtandem.apply_progress yet)")
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
