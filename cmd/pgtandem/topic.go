package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/config"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

func newTopicCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Read a cluster's topic",
	}
	cmd.AddCommand(newTopicTailCmd(a))
	return cmd
}

func newTopicTailCmd(a *app) *cobra.Command {
	var d direction
	var asJSON, follow bool
	var start string
	cmd := &cobra.Command{
		Use:   "tail --from CLUSTER [--json] [--start earliest|latest|LSN] [--follow]",
		Short: "Print the changes in a cluster's topic, one line each",
		Long: `tail reads the cluster's topic (clusters.<name>.topic, or <pulsar.topic-prefix>-pg<major>) with a
non-durable reader, so it changes nothing for pgtandem or other consumers, and prints every change of
every frame: a line of text each, or with --json one JSON object each (the fields of
docs/event-format.md's JSON view: kind, lsn, seq, xid, commit_time, schema, table, columns, new, old,
unchanged). --start says where to begin: earliest (default), latest, or an LSN such as 16/B374D848 (the
first transaction that committed at or after it). Without --follow it stops at the end of the topic;
--start latest implies --follow.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := d.check(a, false); err != nil {
				return err
			}
			from, lsn, err := tailStart(start)
			if err != nil {
				return err
			}
			// At the latest position there is nothing to print but what
			// comes next.
			follow = follow || start == "latest"
			cl, _ := a.cfg.Cluster(d.from)
			topic, err := clusterTopic(cmd.Context(), a.cfg, cl)
			if err != nil {
				return err
			}
			return tailTopic(cmd.Context(), a, topic, from, lsn, asJSON, follow)
		},
	}
	d.flags(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per change")
	cmd.Flags().StringVar(&start, "start", "earliest", "earliest, latest, or an LSN like 16/B374D848")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep waiting for new frames at the end of the topic")
	return cmd
}

// tailStart reads --start: a reader position, and an LSN to skip to.
func tailStart(start string) (pulsar.MessageID, event.LSN, error) {
	switch start {
	case "earliest", "":
		return pulsar.EarliestMessageID(), 0, nil
	case "latest":
		return pulsar.LatestMessageID(), 0, nil
	}
	lsn, err := event.ParseLSN(start)
	if err != nil {
		return nil, 0, fmt.Errorf("--start %q: want earliest, latest or an LSN like 16/B374D848", start)
	}
	return pulsar.EarliestMessageID(), lsn, nil
}

// clusterTopic is the cluster's topic: configured, or named after the
// server's major version.
func clusterTopic(ctx context.Context, cfg config.Config, cl config.Cluster) (string, error) {
	if cl.Topic != "" {
		return cl.Topic, nil
	}
	return catalog.TopicOf(ctx, cl.DSN.ConnString(), cfg.Pulsar.TopicPrefix)
}

// tailTopic prints the changes of topic from start, skipping transactions
// that committed before skipTo.
func tailTopic(ctx context.Context, a *app, topic string, start pulsar.MessageID, skipTo event.LSN, asJSON, follow bool) error {
	token, err := pulsarToken(a.cfg.Pulsar)
	if err != nil {
		return err
	}
	client, err := pulsarclient.New(pulsarclient.Options{URL: a.cfg.Pulsar.URL, Token: token, TLS: pulsarTLS(a.cfg.Pulsar), Log: a.log})
	if err != nil {
		return err
	}
	defer client.Close()
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: topic, StartMessageID: start})
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer reader.Close()
	out := changePrinter{w: a.stdout, json: asJSON}
	for {
		if !follow && !reader.HasNext() {
			return nil
		}
		msg, err := reader.Next(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %s: %w", topic, err)
		}
		if skipTo != 0 {
			// Frames before the start are passed over by their header,
			// even ones this build could not decode whole.
			h, _, err := event.DecodeHeader(msg.Payload())
			if err == nil && h.LSN < skipTo {
				continue
			}
		}
		f, err := event.DecodeFrame(msg.Payload())
		if err != nil {
			return fmt.Errorf("message %s of %s: %w", msg.ID(), topic, err)
		}
		for _, ev := range f.Changes {
			if err := out.print(ev); err != nil {
				return err
			}
		}
	}
}

// changePrinter writes changes as text or JSON lines.
type changePrinter struct {
	w    io.Writer
	json bool
}

func (p changePrinter) print(ev *event.Event) error {
	if p.json {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s #%d xid %d %s %s", ev.LSN, ev.Seq, ev.Xid, ev.CommitTime.Format(time.RFC3339Nano), ev.Kind)
	switch ev.Kind {
	case event.KindTruncate:
		for _, t := range ev.Tables {
			fmt.Fprintf(&b, " %s", t)
		}
	case event.KindMessage:
		fmt.Fprintf(&b, " %s %q", ev.Prefix, ev.Content)
	default:
		fmt.Fprintf(&b, " %s", ev.QualifiedTable())
		if ev.Old != nil {
			fmt.Fprintf(&b, " old %s", rowText(ev.Columns, ev.Old, ev.OldUnchanged))
		}
		if ev.New != nil {
			fmt.Fprintf(&b, " new %s", rowText(ev.Columns, ev.New, ev.Unchanged))
		}
	}
	_, err := fmt.Fprintln(p.w, b.String())
	return err
}

// rowText prints a row as (col=value, ...) in column order.
func rowText(columns []event.Column, row map[string]*string, unchanged []string) string {
	var parts []string
	for _, c := range columns {
		v, ok := row[c.Name]
		switch {
		case ok && v == nil:
			parts = append(parts, c.Name+"=NULL")
		case ok:
			parts = append(parts, c.Name+"="+strconv.Quote(*v))
		default:
			for _, u := range unchanged {
				if u == c.Name {
					parts = append(parts, c.Name+"=<unchanged>")
				}
			}
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
