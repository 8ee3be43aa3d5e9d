// Package pulsarclient builds the pulsar-client-go client every pgtandem
// service uses, the same against Apache Pulsar in production and against
// `pgtandem broker serve` in tests and rehearsals.
package pulsarclient

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
	"github.com/prometheus/client_golang/prometheus"
)

// Options say how to reach the broker.
type Options struct {
	URL string
	// Token is a JWT for token authentication; empty for none.
	Token string
	// TLS applies to a pulsar+ssl:// URL and is ignored otherwise.
	TLS TLS
	Log *slog.Logger
	// Registerer receives the client's own metrics; nil keeps them out of
	// the process-wide default registry.
	Registerer prometheus.Registerer
}

// New creates a client. The client logs connection churn at info level;
// only its warnings and errors reach our log.
func New(o Options) (pulsar.Client, error) {
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	opts := pulsar.ClientOptions{
		URL:               o.URL,
		ConnectionTimeout: 10 * time.Second,
		OperationTimeout:  30 * time.Second,
		Logger:            pulsarlog.NewLoggerWithSlog(slog.New(minLevel{slog.LevelWarn, o.Log.Handler()}).With("component", "pulsar-client")),
		MetricsRegisterer: reg,
	}
	if o.Token != "" {
		opts.Authentication = pulsar.NewAuthenticationToken(o.Token)
	}
	if strings.HasPrefix(o.URL, "pulsar+ssl://") {
		tlsCfg, err := o.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tlsCfg
	}
	client, err := pulsar.NewClient(opts)
	if err != nil {
		return nil, fmt.Errorf("pulsar client for %s: %w", o.URL, err)
	}
	return client, nil
}

// minLevel drops records below a level before they reach the handler.
type minLevel struct {
	level slog.Level
	slog.Handler
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.level, h.Handler.WithAttrs(attrs)}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.level, h.Handler.WithGroup(name)}
}
