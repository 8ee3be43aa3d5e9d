package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/cursor"
	"github.com/pgtandem/pgtandem/internal/catalog"
)

func newCursorCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cursor",
		Short: "Move downstream consumers from one cluster's topic to the other's at a switch",
		Long: `Every switch records its cut in both topics and in pgtandem.cursor on both clusters (a 'cut' row
on the target, a 'hop' row on the source). Consumers built on the Go package cursor read across it
by themselves; these commands prepare and watch their subscriptions. See docs/consumers.md.`,
	}
	cmd.AddCommand(newCursorPrepareCmd(a), newCursorStatusCmd(a))
	return cmd
}

func newCursorPrepareCmd(a *app) *cobra.Command {
	var switchID string
	var only []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "prepare [--switch ID]",
		Short: "Give every subscription of the switch's source topic one of the same name on its target topic, at the cut",
		Long: `prepare creates, for every durable subscription of the source cluster's topic other than pgtandem's
own, a subscription of the same name on the target cluster's topic, positioned at the switch's cut:
a consumer that moves late still finds every change written on the target since the switch, whatever
the broker's retention. Subscriptions already there are left alone. Without --switch, the latest
switch. switch.cursor-prepare runs it at every switch. It fails with the lost range when retention
deleted the cut already.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hop, clients, err := switchAndBroker(cmd.Context(), a, switchID)
			if err != nil {
				return err
			}
			defer clients.close()
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			prepared, err := cursor.Prepare(ctx, clients.admin, clients.client, hop, only)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(map[string]any{"switch": hop, "prepared": prepared}); jerr != nil && err == nil {
					err = jerr
				}
				return err
			}
			for _, p := range prepared {
				what := "created at the cut"
				if !p.Created {
					what = "exists already, left as it is"
				}
				fmt.Fprintf(a.stdout, "%s on %s: %s\n", p.Subscription, hop.ToTopic, what)
			}
			if err == nil && len(prepared) == 0 {
				fmt.Fprintf(a.stdout, "%s has no subscription other than pgtandem's: nothing to prepare\n", hop.FromTopic)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&switchID, "switch", "", "the switch's id (pgtandem switch prints it); the latest when empty")
	cmd.Flags().StringSliceVar(&only, "subscription", nil, "prepare only this subscription (repeatable); every one of the source's topic but pgtandem's when none")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newCursorStatusCmd(a *app) *cobra.Command {
	var switchID string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--switch ID]",
		Short: "Show, per subscription, how far it is from the switch's cut and whether it has hopped",
		Long: `status shows, for every durable subscription of the switch's source topic other than pgtandem's own:
how many messages it has still to read before the cut, whether it exists on the target's topic and its
backlog there, and whether it has passed the cut (acknowledged the cut frame on the target's topic).
Without --switch, the latest switch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hop, clients, err := switchAndBroker(cmd.Context(), a, switchID)
			if err != nil {
				return err
			}
			defer clients.close()
			subs, err := cursor.Status(cmd.Context(), clients.admin, hop)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"switch": hop, "subscriptions": subs})
			}
			fmt.Fprintf(a.stdout, "switch %s: %s -> %s, cut after message %s of %s, at message %s of %s\n\n",
				hop.SwitchID, hop.From, hop.To, hop.FromMessageID, hop.FromTopic, hop.ToMessageID, hop.ToTopic)
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "SUBSCRIPTION\tBEFORE CUT ON %s\tON %s\tBACKLOG ON %s\tPASSED CUT\n", hop.From, hop.To, hop.To)
			for _, s := range subs {
				on := "no"
				if s.Prepared {
					on = "yes"
				}
				passed := "no"
				if s.Passed {
					passed = "yes"
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\n", s.Subscription, s.BeforeCut, on, s.Backlog, passed)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&switchID, "switch", "", "the switch's id; the latest when empty")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// NoSwitchError says that no configured cluster holds a hop row: no switch
// completed, or not the one asked for.
type NoSwitchError struct {
	SwitchID string
}

func (e *NoSwitchError) Error() string {
	if e.SwitchID == "" {
		return "no switch has completed between the configured clusters (pgtandem.cursor holds no hop row)"
	}
	return fmt.Sprintf("switch %s has no hop row in pgtandem.cursor on any configured cluster: it did not complete, or pgtandem switch --resume must still record its cut", e.SwitchID)
}

// switchAndBroker finds a switch's hop row (findHop) and opens the
// broker's clients, the admin API's included.
func switchAndBroker(ctx context.Context, a *app, switchID string) (*cursor.Mark, *pulsarClients, error) {
	hop, err := findHop(ctx, a, switchID)
	if err != nil {
		return nil, nil, err
	}
	clients, err := newPulsarClients(a, true)
	return hop, clients, err
}

// findHop returns the hop row of switchID, or of the latest switch (switch
// ids start with the switch's start time), from whichever configured
// cluster holds it.
func findHop(ctx context.Context, a *app, switchID string) (*cursor.Mark, error) {
	var latest *cursor.Mark
	for _, name := range slices.Sorted(maps.Keys(a.cfg.Clusters)) {
		conn, err := catalog.Connect(ctx, a.cfg.Clusters[name].DSN.ConnString())
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", name, err)
		}
		hops, err := cursor.Hops(ctx, conn)
		_ = conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", name, err)
		}
		for _, h := range hops {
			if switchID != "" && h.SwitchID == switchID {
				return h, nil
			}
			if switchID == "" && (latest == nil || h.SwitchID > latest.SwitchID) {
				latest = h
			}
		}
	}
	if latest == nil {
		return nil, &NoSwitchError{SwitchID: switchID}
	}
	return latest, nil
}
