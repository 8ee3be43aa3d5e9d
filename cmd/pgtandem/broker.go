package main

import (
	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/internal/config"
)

// brokerFlags are `broker serve`'s shortcuts for the broker.* keys.
var brokerFlags = map[string]string{
	"listen":           "broker.listen",
	"admin-listen":     "broker.admin-listen",
	"data-dir":         "broker.data-dir",
	"auth-token-file":  "broker.auth-token-file",
	"dedup":            "broker.dedup",
	"max-message-size": "broker.max-message-size",
	"retention-size":   "broker.retention-size",
	"retention-time":   "broker.retention-time",
}

func init() {
	for flag, key := range brokerFlags {
		keyFlags[flag] = key
	}
}

func newBrokerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "The single-node Pulsar-protocol broker for development, CI and local rehearsals",
	}
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve Pulsar's binary protocol on --listen (production uses an Apache Pulsar cluster instead)",
		Long: `Serve Pulsar's binary protocol with a single-node broker that keeps its data on disk.

It exists because no Apache Pulsar can run on development and CI machines without a JVM; tests and
local rehearsals use it through the same pulsar-client-go code path that talks to a real Pulsar
cluster in production. It is not a replacement for Apache Pulsar. See docs/broker.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devbroker.Run(cmd.Context(), brokerConfig(a.cfg.Broker), a.log)
		},
	}
	def := config.Default().Broker
	f := serve.Flags()
	f.String("listen", def.Listen, "Pulsar binary protocol address (broker.listen)")
	f.String("admin-listen", def.AdminListen, "HTTP admin API address, empty = off (broker.admin-listen)")
	f.String("data-dir", def.DataDir, "topic logs and subscription cursors (broker.data-dir)")
	f.String("auth-token-file", def.AuthTokenFile, "require clients to present the token in this file (broker.auth-token-file)")
	f.Bool("dedup", def.Dedup, "drop resent messages by producer name and sequence id (broker.dedup)")
	f.Int("max-message-size", def.MaxMessageSize, "largest message in bytes (broker.max-message-size)")
	f.Int64("retention-size", def.RetentionSize, "bytes a topic keeps, 0 = everything (broker.retention-size)")
	f.Duration("retention-time", def.RetentionTime, "age a topic keeps, 0 = everything (broker.retention-time)")
	cmd.AddCommand(serve)
	return cmd
}

func brokerConfig(c config.Broker) devbroker.Config {
	cfg := devbroker.DefaultConfig()
	cfg.Listen = c.Listen
	cfg.AdminListen = c.AdminListen
	cfg.DataDir = c.DataDir
	cfg.AuthTokenFile = c.AuthTokenFile
	cfg.Dedup = c.Dedup
	cfg.MaxMessageSize = c.MaxMessageSize
	cfg.RetentionSize = c.RetentionSize
	cfg.RetentionTime = c.RetentionTime
	return cfg
}
