package main

import (
	"github.com/spf13/cobra"
)

func newStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show slot positions, apply progress, lag and blocked reasons of every cluster and direction",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return &errNotImplemented{"status", "issue 5"}
		},
	}
}
