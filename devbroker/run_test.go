package devbroker_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/internal/brokertest"
)

func TestRunServesUntilCancelledAndReturnsNil(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := devbroker.DefaultConfig()
	cfg.Listen = addr
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- devbroker.Run(ctx, cfg, brokertest.Logger()) }()

	c := newClient(t, "pulsar://"+addr)
	p := newProducer(t, c, pulsar.ProducerOptions{Topic: "run"})
	sendN(t, p, 0, 1)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// The data directory is unlocked again.
	s, err := devbroker.New(cfg, nil)
	if err != nil {
		t.Fatalf("reopen after Run: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSecondBrokerOnSameDataDirIsRefused(t *testing.T) {
	b := brokertest.Start(t)
	cfg := b.Config()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", ""
	if s, err := devbroker.New(cfg, nil); err == nil {
		s.Close()
		t.Fatal("a second broker opened a data directory in use")
	}
}
