package main

import (
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/telemetry"
)

func newBroker2pgCmd(a *app) *cobra.Command {
	var d direction
	var startAfter, metricsListen string
	cmd := &cobra.Command{
		Use:   "broker2pg --from CLUSTER --to CLUSTER",
		Short: "Apply one cluster's topic into another cluster, exactly once in effect (long-running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, true); err != nil {
				return err
			}
			from, _ := a.cfg.Cluster(d.from)
			to, _ := a.cfg.Cluster(d.to)
			token, err := pulsarToken(a.cfg.Pulsar)
			if err != nil {
				return err
			}
			cfg := broker2pg.DefaultConfig()
			cfg.Source, cfg.Target = d.from, d.to
			cfg.TargetDSN = to.DSN.ConnString()
			cfg.SourceDSN = from.DSN.ConnString()
			cfg.Topic = from.Topic
			cfg.TopicPrefix = a.cfg.Pulsar.TopicPrefix
			cfg.PulsarURL = a.cfg.Pulsar.URL
			cfg.PulsarToken = token
			cfg.PulsarTLS = pulsarTLS(a.cfg.Pulsar)
			cfg.AdminURL = a.cfg.Pulsar.AdminURL
			if startAfter != "" {
				if cfg.StartAfterLSN, err = pglogrepl.ParseLSN(startAfter); err != nil {
					return fmt.Errorf("--start-after-lsn %q is not an LSN like 16/B374D848", startAfter)
				}
			}
			return runService(cmd.Context(), a, "pgtandem/broker2pg", metricsListen, func(tel *telemetry.Telemetry) (service, error) {
				return broker2pg.New(cfg, a.log, tel)
			})
		},
	}
	d.flags(cmd, true)
	cmd.Flags().StringVar(&startAfter, "start-after-lsn", "", "for a target cloned from a physical copy: skip source transactions committed at or before this LSN (recorded on first use)")
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", "", "address for /metrics, /healthz and /readyz, e.g. :9188 (off when empty)")
	return cmd
}
