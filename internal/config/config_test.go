package config

import (
	"errors"
	"strings"
	"testing"
)

func TestKeyForEnv(t *testing.T) {
	cases := map[string]string{
		"PGTANDEM_CLUSTERS_OLD_DSN":        "clusters.old.dsn",
		"PGTANDEM_CLUSTERS_DB_OLD_TOPIC":   "clusters.db_old.topic",
		"PGTANDEM_PULSAR_TOPIC_PREFIX":     "pulsar.topic-prefix",
		"PGTANDEM_BROKER_MAX_MESSAGE_SIZE": "broker.max-message-size",
		"PGTANDEM_LOG_LEVEL":               "log.level",
		"PGTANDEM_PULSAR_ADMIN_URL":        "pulsar.admin-url",
	}
	for env, want := range cases {
		got, ok := KeyForEnv(env)
		if !ok || got != want {
			t.Errorf("KeyForEnv(%s) = %q, %v; want %q", env, got, ok, want)
		}
		if !KnownKey(got) {
			t.Errorf("KnownKey(%q) = false", got)
		}
	}
	for _, env := range []string{"PGTANDEM_CLUSTERS__DSN", "PGTANDEM_PULSAR", "PGTANDEM_NOPE", "OTHER_LOG_LEVEL"} {
		if got, ok := KeyForEnv(env); ok {
			t.Errorf("KeyForEnv(%s) = %q, want no key", env, got)
		}
	}
	if EnvName("clusters.old.dsn") != "PGTANDEM_CLUSTERS_OLD_DSN" {
		t.Errorf("EnvName = %s", EnvName("clusters.old.dsn"))
	}
}

func TestValidateCollectsEveryError(t *testing.T) {
	cfg := Default()
	cfg.Clusters = map[string]Cluster{"Old": {DSN: "postgres://a@h/db"}, "new": {}}
	cfg.Pulsar.URL = "pulsar://h:99999"
	cfg.Pulsar.AdminURL = "pulsar://h:8080"
	cfg.Capture.BatchDelay = 0
	cfg.Broker.MaxMessageSize = 10
	err := cfg.Validate()
	var keys []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("%v is not a *config.Error", e)
		}
		keys = append(keys, ce.Key)
	}
	want := "clusters.Old clusters.new.dsn pulsar.url pulsar.admin-url capture.batch-delay broker.max-message-size"
	if strings.Join(keys, " ") != want {
		t.Fatalf("error keys = %v, want %s", keys, want)
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestRedact(t *testing.T) {
	cases := []struct{ dsn, secret string }{
		{"postgres://u:pa%40ss@h/db", "pa@ss"},
		{"postgres://u:pa%40ss@h/db", "pa%40ss"},
		{"host=h password='it''s long' user=u", "it''s long"},
		{"host=h password=plain user=u", "plain"},
		{"postgres://u@h/db?password=qpw&sslmode=disable", "qpw"},
	}
	for _, tc := range cases {
		if got := DSN(tc.dsn).String(); strings.Contains(got, tc.secret) {
			t.Errorf("DSN(%q).String() = %q still has the password", tc.dsn, got)
		}
		if got := Redact("failed: "+tc.dsn, tc.dsn); strings.Contains(got, tc.secret) {
			t.Errorf("Redact kept %q in %q", tc.secret, got)
		}
	}
	if got := DSN("postgres://u:pw@h:5433/db").Host(); got != "h:5433" {
		t.Errorf("Host() = %q", got)
	}
}

func TestPulsarTLSKeys(t *testing.T) {
	for _, key := range []string{"pulsar.tls-trust-certs-file", "pulsar.tls-validate-hostname", "pulsar.tls-cert-file", "pulsar.tls-key-file", "pulsar.tls-allow-insecure"} {
		if !KnownKey(key) {
			t.Errorf("KnownKey(%q) = false", key)
		}
	}
	if got, _ := KeyForEnv("PGTANDEM_PULSAR_TLS_TRUST_CERTS_FILE"); got != "pulsar.tls-trust-certs-file" {
		t.Errorf("KeyForEnv(PGTANDEM_PULSAR_TLS_TRUST_CERTS_FILE) = %q", got)
	}
	if !Default().Pulsar.TLSValidateHostname {
		t.Error("pulsar.tls-validate-hostname defaults to false; hostname checks must be on unless turned off")
	}
	tlsURL := "pulsar+ssl://broker.example:6651"
	cases := []struct {
		name string
		set  func(*Pulsar)
		want string // the keys in error, in order; empty for valid
	}{
		{"trust file and client certificate", func(p *Pulsar) {
			p.URL, p.TLSTrustCertsFile, p.TLSCertFile, p.TLSKeyFile = tlsURL, "/tls/ca.crt", "/tls/tls.crt", "/tls/tls.key"
		}, ""},
		{"verify-ca", func(p *Pulsar) { p.URL, p.TLSValidateHostname = tlsURL, false }, ""},
		{"system roots", func(p *Pulsar) { p.URL = tlsURL }, ""},
		{"certificate without key", func(p *Pulsar) { p.URL, p.TLSCertFile = tlsURL, "/tls/tls.crt" }, "pulsar.tls-cert-file"},
		{"key without certificate", func(p *Pulsar) { p.URL, p.TLSKeyFile = tlsURL, "/tls/tls.key" }, "pulsar.tls-key-file"},
		{"insecure with a trust file", func(p *Pulsar) {
			p.URL, p.TLSAllowInsecure, p.TLSTrustCertsFile = tlsURL, true, "/tls/ca.crt"
		}, "pulsar.tls-allow-insecure"},
		{"TLS files on a plain URL", func(p *Pulsar) {
			p.URL, p.TLSTrustCertsFile, p.TLSCertFile, p.TLSKeyFile = "pulsar://broker:6650", "/tls/ca.crt", "/tls/tls.crt", "/tls/tls.key"
		}, "pulsar.tls-trust-certs-file pulsar.tls-cert-file pulsar.tls-key-file"},
		{"hostname check off on a plain URL is harmless", func(p *Pulsar) { p.TLSValidateHostname = false }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			tc.set(&cfg.Pulsar)
			var keys []string
			if err := cfg.Validate(); err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var ce *Error
					if !errors.As(e, &ce) {
						t.Fatalf("%v is not a *config.Error", e)
					}
					keys = append(keys, ce.Key)
				}
			}
			if got := strings.Join(keys, " "); got != tc.want {
				t.Fatalf("error keys = %q, want %q (%v)", got, tc.want, cfg.Validate())
			}
		})
	}
}
