package brokertest

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgtandem/pgtandem/devbroker"
)

// Option adjusts the broker a test starts.
type Option func(*settings)

type settings struct {
	cfg   devbroker.Config
	token string
}

// WithToken turns on token authentication with token.
func WithToken(token string) Option {
	return func(s *settings) { s.token = token }
}

// WithDataDir keeps the broker's data in dir instead of a fresh temporary
// directory, e.g. to start a second broker on the data of a first.
func WithDataDir(dir string) Option {
	return func(s *settings) { s.cfg.DataDir = dir }
}

// WithConfig lets a test change any other setting.
func WithConfig(f func(*devbroker.Config)) Option {
	return func(s *settings) { f(&s.cfg) }
}

// Broker is a broker running for one test.
type Broker struct {
	t   testing.TB
	cfg devbroker.Config
	srv *devbroker.Server
}

// Start starts a broker and registers its stop with t.Cleanup. Broker log
// lines of level WARN and above go to stderr (set BROKERTEST_LOG=debug for
// everything). Under -short the test is skipped, as for pgtest.Start.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a broker: not in -short mode")
	}
	s := settings{cfg: devbroker.DefaultConfig()}
	s.cfg.Listen = "127.0.0.1:0"
	s.cfg.AdminListen = "127.0.0.1:0"
	s.cfg.DataDir = filepath.Join(t.TempDir(), "broker")
	for _, o := range opts {
		o(&s)
	}
	if s.token != "" {
		s.cfg.AuthTokenFile = filepath.Join(t.TempDir(), "broker-token")
		if err := os.WriteFile(s.cfg.AuthTokenFile, []byte(s.token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := &Broker{t: t, cfg: s.cfg}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

func (b *Broker) start() {
	b.t.Helper()
	srv, err := devbroker.New(b.cfg, Logger())
	if err != nil {
		b.t.Fatalf("start broker: %v", err)
	}
	if err := srv.Start(); err != nil {
		b.t.Fatalf("start broker: %v", err)
	}
	b.srv = srv
	// A restart must come back on the same ports so that clients reconnect.
	b.cfg.Listen = srv.Addr().String()
	b.cfg.AdminListen = srv.AdminAddr()
}

// Logger returns the logger brokertest gives brokers.
func Logger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("BROKERTEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// URL returns the pulsar:// service URL.
func (b *Broker) URL() string { return "pulsar://" + b.cfg.Listen }

// AdminURL returns the http:// base URL of the admin API.
func (b *Broker) AdminURL() string { return "http://" + b.cfg.AdminListen }

// DataDir returns the broker's data directory.
func (b *Broker) DataDir() string { return b.cfg.DataDir }

// Config returns the configuration the broker runs with, its listen
// addresses resolved.
func (b *Broker) Config() devbroker.Config { return b.cfg }

// Stop stops the broker cleanly; stopping a stopped broker does nothing.
func (b *Broker) Stop() {
	if b.srv == nil {
		return
	}
	if err := b.srv.Close(); err != nil {
		b.t.Errorf("stop broker: %v", err)
	}
	b.srv = nil
}

// Restart stops the broker and starts it again on the same data and ports,
// as an operator restarting it would; connected clients reconnect.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start()
}
