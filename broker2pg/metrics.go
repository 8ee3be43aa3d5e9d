package broker2pg

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the apply's OpenTelemetry instruments; the gauges read the
// service's live values at collection time.
type metrics struct {
	rows    metric.Int64Counter
	txns    metric.Int64Counter
	batch   metric.Int64Histogram
	latency metric.Float64Histogram
	attrs   metric.MeasurementOption
}

func newMetrics(meter metric.Meter, s *Service) (*metrics, error) {
	m := &metrics{attrs: metric.WithAttributes(attribute.String("source", s.cfg.Source), attribute.String("target", s.cfg.Target))}
	var err error
	if m.rows, err = meter.Int64Counter("pgtandem.apply.rows", metric.WithDescription("row changes applied")); err != nil {
		return nil, err
	}
	if m.txns, err = meter.Int64Counter("pgtandem.apply.transactions", metric.WithDescription("source transactions applied")); err != nil {
		return nil, err
	}
	if m.batch, err = meter.Int64Histogram("pgtandem.apply.batch.transactions", metric.WithDescription("source transactions per target transaction"),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)); err != nil {
		return nil, err
	}
	if m.latency, err = meter.Float64Histogram("pgtandem.apply.latency", metric.WithUnit("s"),
		metric.WithDescription("time from a target transaction's first statement to its commit"),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	lag, err := meter.Float64ObservableGauge("pgtandem.apply.lag.seconds", metric.WithUnit("s"), metric.WithDescription("age of the oldest source transaction received and not applied: 0 when nothing is pending, growing while the apply is blocked"))
	if err != nil {
		return nil, err
	}
	applied, err := meter.Int64ObservableGauge("pgtandem.apply.applied.lsn", metric.WithDescription("commit LSN of the last applied source transaction, as a number"))
	if err != nil {
		return nil, err
	}
	backlog, err := meter.Int64ObservableGauge("pgtandem.apply.backlog", metric.WithDescription("messages of the subscription not yet acknowledged (from the broker's admin API)"))
	if err != nil {
		return nil, err
	}
	blocked, err := meter.Int64ObservableGauge("pgtandem.apply.blocked", metric.WithDescription("1 while the apply is stopped at a message it cannot apply"))
	if err != nil {
		return nil, err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(lag, s.Lag().Seconds(), m.attrs)
		o.ObserveInt64(applied, int64(s.applied.Load()), m.attrs)
		if n := s.backlog.Load(); n != backlogUnknown {
			o.ObserveInt64(backlog, n, m.attrs)
		}
		var b int64
		if s.blocked.Load() {
			b = 1
		}
		o.ObserveInt64(blocked, b, m.attrs)
		return nil
	}, lag, applied, backlog, blocked)
	return m, err
}

// committed counts one target transaction.
func (m *metrics) committed(txns, rows int, took time.Duration) {
	ctx := context.Background()
	m.rows.Add(ctx, int64(rows), m.attrs)
	m.txns.Add(ctx, int64(txns), m.attrs)
	m.batch.Record(ctx, int64(txns), m.attrs)
	m.latency.Record(ctx, took.Seconds(), m.attrs)
}
