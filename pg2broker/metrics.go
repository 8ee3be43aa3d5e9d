package pg2broker

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pgtandem/pgtandem/event"
)

// metrics are the capture's OpenTelemetry instruments. Counts are kept in
// atomics that the instruments read at collection time: recording through
// the SDK for each of hundreds of thousands of messages a second cost more
// than a tenth of the capture's CPU.
type metrics struct {
	rows, txns, bytes atomic.Int64
	latency           metric.Float64Histogram
	attrs             metric.MeasurementOption
}

func newMetrics(meter metric.Meter, s *Service) (*metrics, error) {
	m := &metrics{attrs: metric.WithAttributes(attribute.String("cluster", s.cfg.Cluster))}
	var err error
	rows, err := meter.Int64ObservableCounter("pgtandem.capture.rows", metric.WithDescription("changes published (rows, truncates, logical decoding messages)"))
	if err != nil {
		return nil, err
	}
	txns, err := meter.Int64ObservableCounter("pgtandem.capture.transactions", metric.WithDescription("transactions published"))
	if err != nil {
		return nil, err
	}
	bytes, err := meter.Int64ObservableCounter("pgtandem.capture.bytes", metric.WithUnit("By"), metric.WithDescription("payload bytes published"))
	if err != nil {
		return nil, err
	}
	if m.latency, err = meter.Float64Histogram("pgtandem.capture.publish.latency", metric.WithUnit("s"),
		metric.WithDescription("time from sending a transaction's last frame to the broker's acknowledgement"),
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
	inFlight, err := meter.Int64ObservableGauge("pgtandem.capture.in_flight", metric.WithDescription("frames sent and not yet acknowledged"))
	if err != nil {
		return nil, err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t := s.tracker.Load()
		if t == nil {
			return nil
		}
		o.ObserveInt64(rows, m.rows.Load(), m.attrs)
		o.ObserveInt64(txns, m.txns.Load(), m.attrs)
		o.ObserveInt64(bytes, m.bytes.Load(), m.attrs)
		pos, _ := t.position()
		o.ObserveInt64(confirmed, int64(pos), m.attrs)
		o.ObserveInt64(lagBytes, s.lagByte.Load(), m.attrs)
		o.ObserveFloat64(lagSeconds, t.lagSeconds(), m.attrs)
		o.ObserveInt64(inFlight, int64(t.inFlight()), m.attrs)
		return nil
	}, rows, txns, bytes, confirmed, lagBytes, lagSeconds, inFlight)
	return m, err
}

// published counts one acknowledged frame; latency is measured for last
// fragments only, which is the transaction's publish latency.
func (m *metrics) published(f *event.Encoded, sentAt time.Time) {
	m.rows.Add(int64(f.Changes))
	if f.Last {
		m.txns.Add(1)
		m.latency.Record(context.Background(), time.Since(sentAt).Seconds(), m.attrs)
	}
	m.bytes.Add(int64(len(f.Payload)))
}
