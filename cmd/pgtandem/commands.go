package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}

// signalContext is cancelled by SIGINT or SIGTERM: every long-running command
// treats that as "finish what is in flight, confirm, exit 0".
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:         "version",
		Short:       "Print the pgtandem version",
		Args:        cobra.NoArgs,
		Annotations: map[string]string{"config": "none"},
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(stdout, "pgtandem %s\n", buildVersion())
		},
	}
}

// direction holds --from/--to of the commands that move data between two
// clusters.
type direction struct{ from, to string }

func (d *direction) flags(cmd *cobra.Command, withTo bool) {
	cmd.Flags().StringVar(&d.from, "from", "", "source cluster name from the config (e.g. old)")
	_ = cmd.MarkFlagRequired("from")
	if withTo {
		cmd.Flags().StringVar(&d.to, "to", "", "target cluster name from the config (e.g. new)")
		_ = cmd.MarkFlagRequired("to")
	}
}

// check resolves both clusters, so a misspelt name fails before any work.
func (d *direction) check(a *app, withTo bool) error {
	if _, err := a.cfg.Cluster(d.from); err != nil {
		return err
	}
	if !withTo {
		return nil
	}
	if _, err := a.cfg.Cluster(d.to); err != nil {
		return err
	}
	if d.from == d.to {
		return fmt.Errorf("--from and --to are both %q: a cluster cannot be its own target", d.from)
	}
	return nil
}

func newPg2brokerCmd(a *app) *cobra.Command {
	var d direction
	var createSlot bool
	var metricsListen string
	cmd := &cobra.Command{
		Use:   "pg2broker --from CLUSTER",
		Short: "Capture a cluster's committed changes into its Pulsar topic (long-running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, false); err != nil {
				return err
			}
			cl, _ := a.cfg.Cluster(d.from)
			token, err := pulsarToken(a.cfg.Pulsar)
			if err != nil {
				return err
			}
			cfg := pg2broker.DefaultConfig()
			cfg.Cluster = d.from
			cfg.DSN = cl.DSN.ConnString()
			cfg.Topic = cl.Topic
			cfg.TopicPrefix = a.cfg.Pulsar.TopicPrefix
			cfg.PulsarURL = a.cfg.Pulsar.URL
			cfg.PulsarToken = token
			cfg.PulsarTLS = pulsarTLS(a.cfg.Pulsar)
			cfg.CreateSlot = createSlot
			cfg.FrameMaxChanges = a.cfg.Capture.FrameMaxChanges
			cfg.FrameMaxBytes = a.cfg.Capture.FrameMaxBytes
			cfg.BatchDelay = a.cfg.Capture.BatchDelay
			return runService(cmd.Context(), a, "pgtandem/pg2broker", metricsListen, func(tel *telemetry.Telemetry) (service, error) {
				return pg2broker.New(cfg, a.log, tel)
			})
		},
	}
	d.flags(cmd, false)
	cmd.Flags().BoolVar(&createSlot, "create-slot", false, "create the publication and slot when missing (pgtandem init normally does)")
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", "", "address for /metrics, /healthz and /readyz, e.g. :9187 (off when empty)")
	return cmd
}
