package main

import (
	"github.com/spf13/cobra"
)

func newBroker2pgCmd(a *app) *cobra.Command {
	var d direction
	cmd := &cobra.Command{
		Use:   "broker2pg --from CLUSTER --to CLUSTER",
		Short: "Apply one cluster's topic into another cluster, exactly once in effect (long-running)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := d.check(a, true); err != nil {
				return err
			}
			return &errNotImplemented{"broker2pg", "issue 5"}
		},
	}
	d.flags(cmd, true)
	return cmd
}
