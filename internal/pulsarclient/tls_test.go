package pulsarclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// pki is a throwaway CA with the certificates a test hands out, as PEM files.
type pki struct {
	t    *testing.T
	dir  string
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	// CAFile is the CA's certificate.
	CAFile string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	p := &pki{t: t, dir: t.TempDir()}
	p.key = newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	if p.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.CAFile = p.write(name+"-ca.crt", "CERTIFICATE", der)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func (p *pki) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue returns the certificate and key files of a leaf for the given DNS
// names and IP addresses.
func (p *pki) issue(name string, usage x509.ExtKeyUsage, dnsNames []string, ips ...net.IP) (certFile, keyFile string) {
	key := newKey(p.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name+".crt", "CERTIFICATE", der), p.write(name+".key", "EC PRIVATE KEY", keyDER)
}

// startTLSBroker starts the development broker with a TLS listener and
// returns its pulsar+ssl:// URL.
func startTLSBroker(t *testing.T, certFile, keyFile, clientCAFile string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a broker: not in -short mode")
	}
	cfg := devbroker.DefaultConfig()
	cfg.Listen, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = certFile, keyFile, clientCAFile
	srv, err := devbroker.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return "pulsar+ssl://" + srv.Addr().String()
}

// roundTrip sends one message through the broker with a client made by
// pulsarclient.New and reads it back.
func roundTrip(t *testing.T, url string, tlsOpts pulsarclient.TLS) {
	t.Helper()
	client, err := pulsarclient.New(pulsarclient.Options{URL: url, TLS: tlsOpts, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	topic := "persistent://public/default/tls-" + strings.ReplaceAll(t.Name(), "/", "-")
	consumer, err := client.Subscribe(pulsar.ConsumerOptions{Topic: topic, SubscriptionName: "s", SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	if err != nil {
		t.Fatalf("subscribe over TLS: %v", err)
	}
	defer consumer.Close()
	producer, err := client.CreateProducer(pulsar.ProducerOptions{Topic: topic})
	if err != nil {
		t.Fatalf("create producer over TLS: %v", err)
	}
	defer producer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := producer.Send(ctx, &pulsar.ProducerMessage{Payload: []byte("over tls")}); err != nil {
		t.Fatalf("send over TLS: %v", err)
	}
	msg, err := consumer.Receive(ctx)
	if err != nil {
		t.Fatalf("receive over TLS: %v", err)
	}
	if string(msg.Payload()) != "over tls" {
		t.Fatalf("received %q", msg.Payload())
	}
}

// handshake dials the broker's TLS listener with the configuration
// pulsarclient builds, as pulsar-client-go does (crypto/tls fills in the
// server name from the address): a refused certificate shows here at once,
// where a client would retry until its operation timeout.
func handshake(t *testing.T, url string, tlsOpts pulsarclient.TLS) error {
	t.Helper()
	cfg, err := tlsOpts.Config()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(url, "pulsar+ssl://"), cfg)
	if err != nil {
		return err
	}
	// With TLS 1.3 the server checks the client certificate after the
	// client's handshake has returned; a read shows its verdict.
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	conn.Close()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

func TestTLSTrustAndHostname(t *testing.T) {
	ca := newPKI(t, "pulsar")
	cert, key := ca.issue("broker", x509.ExtKeyUsageServerAuth, []string{"localhost"}, net.ParseIP("127.0.0.1"))
	url := startTLSBroker(t, cert, key, "")

	t.Run("trusted CA, hostname checked", func(t *testing.T) {
		roundTrip(t, url, pulsarclient.TLS{TrustCertsFile: ca.CAFile, ValidateHostname: true})
	})
	t.Run("system roots refuse a private CA", func(t *testing.T) {
		err := handshake(t, url, pulsarclient.TLS{ValidateHostname: true})
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Fatalf("handshake error = %v, want an unknown authority", err)
		}
	})
	t.Run("another CA is refused with the hostname check off too", func(t *testing.T) {
		other := newPKI(t, "other")
		if err := handshake(t, url, pulsarclient.TLS{TrustCertsFile: other.CAFile}); err == nil {
			t.Fatal("a certificate of an untrusted CA was accepted")
		}
	})
	t.Run("insecure accepts any certificate", func(t *testing.T) {
		if err := handshake(t, url, pulsarclient.TLS{AllowInsecure: true}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTLSHostnameMismatch(t *testing.T) {
	ca := newPKI(t, "pulsar")
	// The broker answers lookups with its IP address, which this
	// certificate does not name.
	cert, key := ca.issue("broker", x509.ExtKeyUsageServerAuth, []string{"broker.example"})
	url := startTLSBroker(t, cert, key, "")

	err := handshake(t, url, pulsarclient.TLS{TrustCertsFile: ca.CAFile, ValidateHostname: true})
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Fatalf("handshake error = %v, want a hostname mismatch", err)
	}
	// verify-ca: the chain is checked, the name is not.
	roundTrip(t, url, pulsarclient.TLS{TrustCertsFile: ca.CAFile, ValidateHostname: false})
}

func TestTLSClientCertificate(t *testing.T) {
	ca := newPKI(t, "pulsar")
	cert, key := ca.issue("broker", x509.ExtKeyUsageServerAuth, nil, net.ParseIP("127.0.0.1"))
	clients := newPKI(t, "clients")
	clientCert, clientKey := clients.issue("pgtandem", x509.ExtKeyUsageClientAuth, nil)
	url := startTLSBroker(t, cert, key, clients.CAFile)

	if err := handshake(t, url, pulsarclient.TLS{TrustCertsFile: ca.CAFile, ValidateHostname: true}); err == nil {
		t.Fatal("the broker accepted a client without a certificate")
	}
	roundTrip(t, url, pulsarclient.TLS{TrustCertsFile: ca.CAFile, ValidateHostname: true, CertFile: clientCert, KeyFile: clientKey})
}

func TestTLSFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		opts pulsarclient.TLS
		key  string
	}{
		{pulsarclient.TLS{TrustCertsFile: filepath.Join(dir, "missing.crt")}, "pulsar.tls-trust-certs-file"},
		{pulsarclient.TLS{TrustCertsFile: notPEM}, "pulsar.tls-trust-certs-file"},
		{pulsarclient.TLS{CertFile: notPEM, KeyFile: notPEM}, "pulsar.tls-cert-file and pulsar.tls-key-file"},
	}
	for _, tc := range cases {
		_, err := pulsarclient.New(pulsarclient.Options{URL: "pulsar+ssl://127.0.0.1:6651", TLS: tc.opts, Log: slog.New(slog.DiscardHandler)})
		var fe *pulsarclient.TLSFileError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("New with %+v: error %v, want a TLSFileError naming %s", tc.opts, err, tc.key)
		}
	}
	// A plain URL never reads the TLS files.
	client, err := pulsarclient.New(pulsarclient.Options{URL: "pulsar://127.0.0.1:6650", TLS: cases[0].opts, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("plain URL: %v", err)
	}
	client.Close()
}

func TestAdminOverTLS(t *testing.T) {
	ca := newPKI(t, "admin")
	cert, key := ca.issue("admin", x509.ExtKeyUsageServerAuth, nil, net.ParseIP("127.0.0.1"))
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	var gotAuth string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		http.Error(w, `{"reason":"no such topic"}`, http.StatusNotFound)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	topic, err := utils.GetTopicName("persistent://public/default/t")
	if err != nil {
		t.Fatal(err)
	}

	admin, err := pulsarclient.NewAdmin(srv.URL, "tok", pulsarclient.TLS{TrustCertsFile: ca.CAFile, ValidateHostname: true})
	if err != nil {
		t.Fatal(err)
	}
	// A 404 means TLS and the request went through.
	if _, err := admin.Topics().GetStats(*topic); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("GetStats over trusted TLS: %v, want the server's 404", err)
	}
	if gotAuth != "Bearer tok" {
		t.Errorf("Authorization = %q, want the token", gotAuth)
	}

	untrusting, err := pulsarclient.NewAdmin(srv.URL, "", pulsarclient.TLS{ValidateHostname: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = untrusting.Topics().GetStats(*topic)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) && (err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority")) {
		t.Fatalf("GetStats against an untrusted certificate: %v, want an unknown authority", err)
	}
}
