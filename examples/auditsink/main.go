// Command auditsink is an example downstream consumer of pgtandem's topics:
// it writes every change of the source database into an audit table of its
// own database, across switches and rollbacks, exactly once.
//
// Exactly once comes from storing the consumer's position in the same
// transaction as the changes it describes, and starting from it:
//
//	auditsink --pulsar-url pulsar://127.0.0.1:6650 \
//	    --topic old=persistent://public/default/app-pg15 \
//	    --topic new=persistent://public/default/app-pg17 \
//	    --start old --subscription audit \
//	    --audit-dsn postgres://audit@127.0.0.1/audit
//
// It creates its two tables if they are missing: audit_change (one row per
// change: the cluster it was committed on, commit LSN and time, table,
// kind, key and new row as JSON) and audit_position (the consumer's
// position). See docs/consumers.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/cursor"
)

// killAtHopEnv, set to 1, makes the sink kill itself with SIGKILL at each
// hop, before it processed anything of the new topic, except at the
// switches listed (comma separated) in spareHopsEnv: the fault pgtandem's
// test suite injects.
const (
	killAtHopEnv = "AUDITSINK_KILL_AT_HOP"
	spareHopsEnv = "AUDITSINK_SPARE_HOPS"
)

const schema = `
CREATE TABLE IF NOT EXISTS audit_position (
	subscription text PRIMARY KEY,
	position     text NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_change (
	id           bigserial PRIMARY KEY,
	subscription text NOT NULL,
	cluster      text NOT NULL,
	message_id   text NOT NULL,
	commit_lsn   pg_lsn NOT NULL,
	commit_time  timestamptz NOT NULL,
	xid          bigint NOT NULL,
	seq          int NOT NULL,
	kind         text NOT NULL,
	table_name   text NOT NULL,
	new_row      jsonb,
	old_row      jsonb
);`

type topicFlags map[string]string

func (t topicFlags) String() string { return fmt.Sprint(map[string]string(t)) }

func (t topicFlags) Set(v string) error {
	cluster, topic, ok := strings.Cut(v, "=")
	if !ok || cluster == "" || topic == "" {
		return fmt.Errorf("want cluster=topic, got %q", v)
	}
	t[cluster] = topic
	return nil
}

func main() {
	topics := topicFlags{}
	url := flag.String("pulsar-url", "pulsar://127.0.0.1:6650", "Pulsar service URL")
	flag.Var(topics, "topic", "cluster=topic, once per cluster (as in pgtandem's configuration)")
	start := flag.String("start", "", "the cluster whose topic a first start reads")
	sub := flag.String("subscription", "audit", "durable subscription name, the same on every topic")
	dsn := flag.String("audit-dsn", "", "the audit database")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, topics, *start, *sub, *dsn, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("auditsink stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, topics map[string]string, start, sub, dsn string, log *slog.Logger) error {
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	if _, err := db.Exec(ctx, schema); err != nil {
		return fmt.Errorf("create the audit tables: %w", err)
	}
	pos := cursor.Position{Cluster: start}
	var stored string
	err = db.QueryRow(ctx, `SELECT position FROM audit_position WHERE subscription = $1`, sub).Scan(&stored)
	switch {
	case err == nil:
		if pos, err = cursor.ParsePosition(stored); err != nil {
			return fmt.Errorf("stored position: %w", err)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	client, err := pulsar.NewClient(pulsar.ClientOptions{URL: url})
	if err != nil {
		return err
	}
	defer client.Close()
	cfg := cursor.Config{Client: client, Topics: topics, Subscription: sub, Start: pos, Log: log}
	if os.Getenv(killAtHopEnv) == "1" {
		spare := strings.Split(os.Getenv(spareHopsEnv), ",")
		cfg.OnHop = func(hop *cursor.Mark) {
			if !slices.Contains(spare, hop.SwitchID) {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	consumer, err := cursor.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer consumer.Close()
	log.Info("auditsink started", "position", pos.String())
	for {
		b, err := consumer.Next(ctx)
		if err != nil {
			return err
		}
		if err := store(ctx, db, sub, b); err != nil {
			return err
		}
		// Acknowledged only once stored: the subscription holds on the
		// broker what the audit database does not hold yet.
		if err := consumer.Ack(b); err != nil {
			return err
		}
	}
}

// store writes a batch's changes and the position after it in one
// transaction.
func store(ctx context.Context, db *pgx.Conn, sub string, b *cursor.Batch) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for _, ev := range b.Changes {
			table := ev.QualifiedTable().String()
			if len(ev.Tables) > 0 {
				table = fmt.Sprint(ev.Tables)
			}
			newRow, err := rowJSON(ev.New)
			if err != nil {
				return err
			}
			oldRow, err := rowJSON(ev.Old)
			if err != nil {
				return err
			}
			batch.Queue(`INSERT INTO audit_change (subscription, cluster, message_id, commit_lsn, commit_time, xid, seq, kind, table_name, new_row, old_row)
				VALUES ($1, $2, $3, $4::pg_lsn, $5, $6, $7, $8, $9, $10, $11)`,
				sub, b.Position.Cluster, b.Position.MessageID, b.LSN.String(), b.CommitTime, int64(b.Xid), ev.Seq, string(ev.Kind), table, newRow, oldRow)
		}
		batch.Queue(`INSERT INTO audit_position (subscription, position) VALUES ($1, $2)
			ON CONFLICT (subscription) DO UPDATE SET position = EXCLUDED.position`, sub, b.Position.String())
		return tx.SendBatch(ctx, batch).Close()
	})
}

func rowJSON(row map[string]*string) ([]byte, error) {
	if row == nil {
		return nil, nil
	}
	return json.Marshal(row)
}
