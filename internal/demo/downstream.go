package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/cursor"
	pgtevent "github.com/pgtandem/pgtandem/event"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// downstreamSubscription is the demo's downstream consumer: it reads old's
// topic from the start and follows the writes to new's at the switch and
// back at the rollback, as a CDC sink would (package cursor).
const downstreamSubscription = "demo-downstream"

// DownstreamResult is what the downstream consumer saw.
type DownstreamResult struct {
	// Transactions counts the load's transactions it read (one load_ticks
	// row each), Runs the clusters it read them from, in order (old, new,
	// old after a switch and a rollback), Hops the switches it hopped at.
	Transactions int
	Runs         []string
	Hops         []string
	// Duplicates counts load transactions read twice, OutOfOrder
	// transactions read before one committed earlier on the same
	// cluster, Missing load transactions of the switch phase it never
	// read: all 0.
	Duplicates, OutOfOrder, Missing int
}

// downstream runs the consumer and keeps what it saw.
type downstream struct {
	client   pulsar.Client
	consumer *cursor.Consumer

	mu      sync.Mutex
	res     DownstreamResult
	seen    map[int64]bool
	lastLSN pgtevent.LSN
}

func startDownstream(ctx context.Context, env *environment, log *slog.Logger) (*downstream, error) {
	client, err := pulsarclient.New(pulsarclient.Options{URL: env.brokerURL, Log: log})
	if err != nil {
		return nil, err
	}
	d := &downstream{client: client, seen: map[int64]bool{}}
	d.consumer, err = cursor.New(ctx, cursor.Config{
		Client:       client,
		Topics:       map[string]string{oldCluster: env.topic, newCluster: env.reverseTopic},
		Subscription: downstreamSubscription,
		Start:        cursor.Position{Cluster: oldCluster},
		Log:          log,
		OnHop: func(hop *cursor.Mark) {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.res.Hops = append(d.res.Hops, hop.From+" -> "+hop.To+" at message "+hop.ToMessageID)
		},
	})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("downstream consumer: %w", err)
	}
	return d, nil
}

// run reads until ctx ends.
func (d *downstream) run(ctx context.Context) error {
	defer d.client.Close()
	defer d.consumer.Close()
	for {
		b, err := d.consumer.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("downstream consumer: %w", err)
		}
		d.record(b)
		if err := d.consumer.Ack(b); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("downstream consumer: %w", err)
		}
	}
}

func (d *downstream) record(b *cursor.Batch) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.res.Runs); n == 0 || d.res.Runs[n-1] != b.Position.Cluster {
		d.res.Runs = append(d.res.Runs, b.Position.Cluster)
		d.lastLSN = 0
	}
	if b.LSN < d.lastLSN {
		d.res.OutOfOrder++
	}
	d.lastLSN = b.LSN
	for _, ev := range b.Changes {
		if ev.Table != "load_ticks" || ev.Kind != pgtevent.KindInsert || ev.New["txn"] == nil {
			continue
		}
		txn, err := strconv.ParseInt(*ev.New["txn"], 10, 64)
		if err != nil {
			continue
		}
		if d.seen[txn] {
			d.res.Duplicates++
			continue
		}
		d.seen[txn] = true
		d.res.Transactions++
	}
}

// missing returns the transactions of txns it has not read.
func (d *downstream) missing(txns []int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, t := range txns {
		if !d.seen[t] {
			n++
		}
	}
	return n
}

func (d *downstream) result() DownstreamResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.res
	r.Runs, r.Hops = append([]string(nil), r.Runs...), append([]string(nil), r.Hops...)
	return r
}

func (r DownstreamResult) String() string {
	return fmt.Sprintf("%d load transactions read from %s, hops %s; %d duplicated, %d out of order, %d of the switch phase missing",
		r.Transactions, strings.Join(r.Runs, " -> "), strings.Join(r.Hops, ", "), r.Duplicates, r.OutOfOrder, r.Missing)
}
