package config

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// Secret is a password or token. Printing it with fmt or slog shows
// "REDACTED", so a secret cannot reach a log or an error by accident; Reveal
// is the one way to the value.
type Secret string

// Reveal returns the secret itself, for the one call that needs it.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// DSN is a PostgreSQL connection string, which may carry a password. Printed
// with fmt or slog it shows the connection string with the password replaced
// by xxxxx; ConnString returns it whole for connecting.
type DSN string

// ConnString returns the connection string with its password, for pgx.
func (d DSN) ConnString() string { return string(d) }

// String returns the connection string with every password replaced.
func (d DSN) String() string { return Redact(string(d), string(d)) }

// GoString keeps %#v from printing the password.
func (d DSN) GoString() string { return strconv.Quote(d.String()) }

// LogValue keeps slog from printing the password.
func (d DSN) LogValue() slog.Value { return slog.StringValue(d.String()) }

// Format makes every fmt verb (%v, %s, %q, %x …) print the redacted form.
func (d DSN) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprint(f, strconv.Quote(d.String()))
	case 'v':
		if f.Flag('#') {
			fmt.Fprint(f, d.GoString())
			return
		}
		fmt.Fprint(f, d.String())
	default:
		fmt.Fprint(f, d.String())
	}
}

// Host returns "host:port" of the DSN for messages, or "" if it does not parse.
func (d DSN) Host() string {
	cfg, err := parseDSN(string(d))
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}

func (d DSN) validate() error {
	if strings.TrimSpace(string(d)) == "" {
		return errors.New("is missing: set the cluster's connection string, e.g. postgres://app@db-old:5432/app")
	}
	if _, err := parseDSN(string(d)); err != nil {
		return fmt.Errorf("does not parse: %v", err)
	}
	return nil
}

// Redact replaces every password found in dsn wherever it appears in text.
// Use it on any message built from a library error that may quote a DSN.
func Redact(text, dsn string) string {
	for _, pw := range passwordsIn(dsn) {
		text = strings.ReplaceAll(text, pw, "xxxxx")
	}
	return text
}

// MarshalText keeps encoding/json (and so slog's JSON handler on a whole
// struct) and YAML encoders from writing the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalText keeps encoders from writing the password.
func (d DSN) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
