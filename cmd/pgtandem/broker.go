package main

import (
	"github.com/spf13/cobra"
)

func newBrokerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "The single-node Pulsar-protocol broker for development, CI and local rehearsals",
	}
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve Pulsar's binary protocol on --listen (production uses an Apache Pulsar cluster instead)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &errNotImplemented{"broker serve", "issue 3"}
		},
	}
	cmd.AddCommand(serve)
	return cmd
}
