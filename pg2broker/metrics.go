package pg2broker

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pgtandem/pgtandem/internal/event"
)

// metrics are the capture's OpenTelemetry instruments; the gauges read the
// live tracker at collection time.
type metrics struct {
	rows    metric.Int64Counter
	txns    metric.Int64Counter
	bytes   metric.Int64Counter
	latency metric.Float64Histogram
	attrs   metric.MeasurementOption
}

func newMetrics(meter metric.Meter, s *Service) (*metrics, error) {
	m := &metrics{attrs: metric.WithAttributes(attribute.String("cluster", s.cfg.Cluster))}
	var err error
	if m.rows, err = meter.Int64Counter("pgtandem.capture.rows", metric.WithDescription("row changes published")); err != nil {
		return nil, err
	}
	if m.txns, err = meter.Int64Counter("pgtandem.capture.transactions", metric.WithDescription("transactions published")); err != nil {
		return nil, err
	}
	if m.bytes, err = meter.Int64Counter("pgtandem.capture.bytes", metric.WithUnit("By"), metric.WithDescription("payload bytes published")); err != nil {
		return nil, err
	}
	if m.latency, err = meter.Float64Histogram("pgtandem.capture.publish.latency", metric.WithUnit("s"),
		metric.WithDescription("time from send to the broker's acknowledgement"),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)); err != nil {
		return nil, err
	}
	confirmed, err := meter.Int64ObservableGauge("pgtandem.capture.confirmed.lsn", metric.WithDescription("LSN confirmed to PostgreSQL, as a number"))
	if err != nil {
		return nil, err
	}
	lagBytes, err := meter.Int64ObservableGauge("pgtandem.capture.lag.bytes", metric.WithUnit("By"), metric.WithDescription("pg_current_wal_lsn() minus the confirmed LSN"))
	if err != nil {
		return nil, err
	}
	lagSeconds, err := meter.Float64ObservableGauge("pgtandem.capture.lag.seconds", metric.WithUnit("s"), metric.WithDescription("source commit to broker acknowledgement of the last transaction; 0 when idle"))
	if err != nil {
		return nil, err
	}
	inFlight, err := meter.Int64ObservableGauge("pgtandem.capture.in_flight", metric.WithDescription("messages sent and not yet acknowledged"))
	if err != nil {
		return nil, err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t := s.tracker.Load()
		if t == nil {
			return nil
		}
		pos, _ := t.position()
		o.ObserveInt64(confirmed, int64(pos), m.attrs)
		o.ObserveInt64(lagBytes, s.lagByte.Load(), m.attrs)
		o.ObserveFloat64(lagSeconds, t.lagSeconds(), m.attrs)
		o.ObserveInt64(inFlight, int64(t.inFlight()), m.attrs)
		return nil
	}, confirmed, lagBytes, lagSeconds, inFlight)
	return m, err
}

// published counts one acknowledged message.
func (m *metrics) published(ev *event.Event, size int, latency time.Duration) {
	ctx := context.Background()
	switch ev.Kind {
	case event.KindInsert, event.KindUpdate, event.KindDelete:
		m.rows.Add(ctx, 1, m.attrs)
	case event.KindCommit:
		m.txns.Add(ctx, 1, m.attrs)
	}
	m.bytes.Add(ctx, int64(size), m.attrs)
	m.latency.Record(ctx, latency.Seconds(), m.attrs)
}
