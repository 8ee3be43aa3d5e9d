package pulsarclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/admin"
	adminauth "github.com/apache/pulsar-client-go/pulsaradmin/pkg/admin/auth"
)

// TLS says how a client checks the broker's certificate on a pulsar+ssl://
// URL (and on an https:// admin URL) and which certificate it presents. The
// zero value trusts the system's roots and checks the host name.
//
// pgtandem builds the crypto/tls configuration itself instead of handing the
// file names to pulsar-client-go: the files are checked once, up front, with
// errors that name the key to fix, and ValidateHostname = false really means
// "chain only" (pulsar-client-go's own flag of that name cannot turn the
// check off, since crypto/tls fills in the server name when dialing).
type TLS struct {
	// TrustCertsFile is a PEM file of the CA certificates that sign the
	// broker's certificate; empty trusts the system's roots.
	TrustCertsFile string
	// ValidateHostname checks that the certificate names the host the
	// client reached (PostgreSQL's verify-full); false checks only that a
	// trusted CA signed it (verify-ca).
	ValidateHostname bool
	// CertFile and KeyFile are the PEM client certificate and key for
	// brokers that require one. They are read again at every handshake, so a
	// renewed certificate is used from the next connection on.
	CertFile string
	KeyFile  string
	// AllowInsecure accepts any certificate: encrypted, not authenticated.
	AllowInsecure bool
}

// TLSFileError is a TLS file that cannot be used: missing, unreadable, or
// not the PEM it should be.
type TLSFileError struct {
	// Key is the configuration key that names the file.
	Key  string
	Path string
	Err  error
}

func (e *TLSFileError) Error() string {
	return fmt.Sprintf("pulsar TLS: %s %s: %v: fix the file or %s", e.Key, e.Path, e.Err, e.Key)
}

func (e *TLSFileError) Unwrap() error { return e.Err }

// Config returns the crypto/tls configuration, after checking that every
// named file can be used.
func (t TLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CertFile != "" || t.KeyFile != "" {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			return nil, &TLSFileError{Key: "pulsar.tls-cert-file and pulsar.tls-key-file", Path: t.CertFile + ", " + t.KeyFile, Err: err}
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, &TLSFileError{Key: "pulsar.tls-cert-file and pulsar.tls-key-file", Path: t.CertFile + ", " + t.KeyFile, Err: err}
			}
			return &cert, nil
		}
	}
	if t.AllowInsecure {
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	if t.TrustCertsFile != "" {
		pem, err := os.ReadFile(t.TrustCertsFile)
		if err != nil {
			return nil, &TLSFileError{Key: "pulsar.tls-trust-certs-file", Path: t.TrustCertsFile, Err: err}
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &TLSFileError{Key: "pulsar.tls-trust-certs-file", Path: t.TrustCertsFile, Err: errors.New("holds no PEM certificate")}
		}
	}
	if !t.ValidateHostname {
		// Verify the chain in VerifyConnection instead of the default
		// verification, which would also check the name.
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, roots)
		}
	}
	return cfg, nil
}

// verifyChain checks that certs (leaf first) chain up to roots (nil: the
// system's roots), whatever names the leaf carries.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("pulsar TLS: the broker sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err
}

// NewAdmin returns a client of the broker's HTTP admin API at url, with
// token authentication when token is set and, for an https:// URL, the same
// TLS checks as the binary protocol.
func NewAdmin(url, token string, t TLS) (pulsaradmin.Client, error) {
	tlsCfg, err := t.Config()
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsCfg
	var provider adminauth.Provider = adminauth.NewDefaultProvider(transport)
	if token != "" {
		if provider, err = adminauth.NewAuthenticationToken(token, transport); err != nil {
			return nil, fmt.Errorf("admin API client for %s: %w", url, err)
		}
	}
	client, err := admin.NewPulsarClientWithAuthProvider(&pulsaradmin.Config{WebServiceURL: url}, provider)
	if err != nil {
		return nil, fmt.Errorf("admin API client for %s: %w", url, err)
	}
	return client, nil
}
