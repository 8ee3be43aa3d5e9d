package main

import (
	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin"

	"github.com/pgtandem/pgtandem/internal/config"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// pulsarClients are a command's clients of the broker: the binary protocol
// and, when asked for, the admin API.
type pulsarClients struct {
	client pulsar.Client
	admin  pulsaradmin.Client
}

// newPulsarClients connects to pulsar.url and, with admin, builds the
// client of pulsar.admin-url (a *config.Error when it is not set).
func newPulsarClients(a *app, admin bool) (*pulsarClients, error) {
	p := a.cfg.Pulsar
	token, err := pulsarToken(p)
	if err != nil {
		return nil, err
	}
	c := &pulsarClients{}
	if admin {
		if p.AdminURL == "" {
			return nil, &config.Error{Key: "pulsar.admin-url", Reason: "is needed to list and create subscriptions"}
		}
		if c.admin, err = pulsarclient.NewAdmin(p.AdminURL, token, pulsarTLS(p)); err != nil {
			return nil, err
		}
	}
	if c.client, err = pulsarclient.New(pulsarclient.Options{URL: p.URL, Token: token, TLS: pulsarTLS(p), Log: a.log}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *pulsarClients) close() { c.client.Close() }
