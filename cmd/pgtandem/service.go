package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/pgtandem/pgtandem/internal/config"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
	"github.com/pgtandem/pgtandem/internal/telemetry"
)

// service is a long-running pgtandem process: capture or apply.
type service interface {
	Run(ctx context.Context) error
	Ready() error
}

// runService is the composition root of the long-running commands: the
// service and its metrics/probe endpoint run together, and a signal ends both
// (the service then finishes in-flight work and returns nil).
func runService(ctx context.Context, a *app, scope, metricsListen string, build func(*telemetry.Telemetry) (service, error)) error {
	tel, err := telemetry.New(scope)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.Background())
	svc, err := build(tel)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	serveCtx, stopServe := context.WithCancel(context.Background())
	g.Go(func() error {
		defer stopServe()
		return svc.Run(gctx)
	})
	g.Go(func() error { return tel.Serve(serveCtx, metricsListen, svc.Ready, a.log) })
	return g.Wait()
}

// pulsarTLS is how the services check the broker's certificate.
func pulsarTLS(p config.Pulsar) pulsarclient.TLS {
	return pulsarclient.TLS{
		TrustCertsFile:   p.TLSTrustCertsFile,
		ValidateHostname: p.TLSValidateHostname,
		CertFile:         p.TLSCertFile,
		KeyFile:          p.TLSKeyFile,
		AllowInsecure:    p.TLSAllowInsecure,
	}
}

// pulsarToken reads the configured token, from the file when one is named.
func pulsarToken(p config.Pulsar) (string, error) {
	if p.AuthTokenFile == "" {
		return p.AuthToken.Reveal(), nil
	}
	b, err := os.ReadFile(p.AuthTokenFile)
	if err != nil {
		return "", fmt.Errorf("pulsar.auth-token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", errors.New("pulsar.auth-token-file: " + p.AuthTokenFile + " is empty")
	}
	return token, nil
}
