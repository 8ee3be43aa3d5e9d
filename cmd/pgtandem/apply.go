package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/config"
)

func newApplyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Operator decisions about an apply (broker2pg) that stands blocked",
	}
	cmd.AddCommand(newApplySkipCmd(a))
	return cmd
}

func newApplySkipCmd(a *app) *cobra.Command {
	var d direction
	var lsnText string
	var change int
	cmd := &cobra.Command{
		Use:   "skip --from CLUSTER --to CLUSTER --lsn LSN --change N",
		Short: "Let a blocked apply pass over exactly the one change it is blocked at, and record that it did",
		Long: `skip records in the target's pgtandem.apply_skips that broker2pg of --from into --to passes
over one change: the --change-th change (the event's seq) of the source transaction committed at
--lsn, exactly as the blocked reason names it ("source lsn 0/1A2B3C8 change 3", shown by
pgtandem status). It refuses unless the apply stands blocked at exactly that change, so nothing
else can be skipped by mistake. broker2pg passes over the change at its next retry, applies the
rest of the transaction, and sets skipped_at and message_id of the row.

The target then lacks that change: skip only a change whose effect you have made sure of (the
row repaired by hand, or known to be meant to go), and check the table with pgtandem verify.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, true); err != nil {
				return err
			}
			lsn, err := event.ParseLSN(lsnText)
			if err != nil {
				return fmt.Errorf("--lsn %q is not an LSN like 0/1A2B3C8", lsnText)
			}
			if change < 1 {
				return fmt.Errorf("--change %d: changes are numbered from 1, as the blocked reason names them", change)
			}
			to, _ := a.cfg.Cluster(d.to)
			at, err := recordSkip(cmd.Context(), to.DSN, d.from, lsn, change)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "recorded: broker2pg of %s into %s passes over change %d of source lsn %s on %s at its next retry\nit was blocked with: %s\n",
				d.from, d.to, change, lsn, at.Table, at.Reason)
			return nil
		},
	}
	d.flags(cmd, true)
	cmd.Flags().StringVar(&lsnText, "lsn", "", "commit LSN of the source transaction, as the blocked reason names it (source lsn ...)")
	cmd.Flags().IntVar(&change, "change", 0, "position of the change in that transaction, as the blocked reason names it (change N)")
	_ = cmd.MarkFlagRequired("lsn")
	_ = cmd.MarkFlagRequired("change")
	return cmd
}

func recordSkip(ctx context.Context, dsn config.DSN, source string, lsn event.LSN, change int) (broker2pg.BlockedAt, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := catalog.Connect(ctx, dsn.ConnString())
	if err != nil {
		return broker2pg.BlockedAt{}, errors.New("connect to the target: " + config.Redact(err.Error(), dsn.ConnString()))
	}
	defer conn.Close(context.Background())
	return broker2pg.RecordSkip(ctx, conn, source, lsn, change)
}
