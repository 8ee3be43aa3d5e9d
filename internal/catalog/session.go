package catalog

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TextSettings are the session settings that change the text form of a value
// (PostgreSQL's output and input functions read them): a date under
// DateStyle 'SQL, DMY', an interval under IntervalStyle sql_standard, a
// timestamptz under another TimeZone, a float under extra_float_digits 0,
// money under another lc_monetary, every string under another
// client_encoding. Every connection that reads or writes values (capture,
// apply, init's copy and pg_dump/pg_restore, verify) pins them, so both
// clusters speak the same text whatever their server, database or role
// defaults say.
//
// extra_float_digits 3 is exact on every major: 12 and later print the
// shortest exact form for any positive value, 11 prints 17 digits.
// xmloption, array_nulls and standard_conforming_strings only change input:
// an XML fragment is refused under xmloption document, an unquoted NULL in
// an array literal becomes the string "NULL" under array_nulls off, and a
// backslash in the SQL literals init and verify build (key range bounds)
// becomes an escape under standard_conforming_strings off.
var TextSettings = map[string]string{
	"DateStyle":                   "ISO, MDY",
	"IntervalStyle":               "postgres",
	"TimeZone":                    "UTC",
	"extra_float_digits":          "3",
	"bytea_output":                "hex",
	"lc_monetary":                 "C",
	"client_encoding":             "UTF8",
	"xmloption":                   "content",
	"array_nulls":                 "on",
	"standard_conforming_strings": "on",
}

// PinTextSettings makes TextSettings startup parameters of cfg. A setting
// sent at startup overrides postgresql.conf, ALTER SYSTEM, ALTER DATABASE
// and ALTER ROLE defaults and the DSN's options; it applies to replication
// connections (the walsender's output functions) as well.
func PinTextSettings(cfg *pgconn.Config) {
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	for name, value := range TextSettings {
		cfg.RuntimeParams[name] = value
	}
}

// TextSettingsOptions is TextSettings as libpq's options parameter (for
// PGOPTIONS of pg_dump and pg_restore): "-c name=value" each, in name
// order, spaces and backslashes escaped as libpq requires.
func TextSettingsOptions() string {
	names := slices.Sorted(maps.Keys(TextSettings))
	escape := strings.NewReplacer(`\`, `\\`, ` `, `\ `)
	opts := make([]string, len(names))
	for i, name := range names {
		opts[i] = "-c " + name + "=" + escape.Replace(TextSettings[name])
	}
	return strings.Join(opts, " ")
}

// Connect opens a session to dsn with TextSettings pinned: the connection
// capture and init read values with.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	PinTextSettings(&cfg.Config)
	nameSession(cfg.RuntimeParams)
	return pgx.ConnectConfig(ctx, cfg)
}

// ConnectReplication opens a walsender session (replication=database) to
// dsn with TextSettings pinned. pgoutput prints every value with the
// walsender's output functions, so its settings, not the source's
// defaults, decide what the events carry.
func ConnectReplication(ctx context.Context, dsn string, opts ...ReplicationOption) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	PinTextSettings(cfg)
	nameSession(cfg.RuntimeParams)
	cfg.RuntimeParams["replication"] = "database"
	for _, opt := range opts {
		opt(cfg)
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

// ReplicationOption adjusts a replication connection's configuration, as
// WrapDial does.
type ReplicationOption func(*pgconn.Config)

// WrapDial makes the connection dial through wrap(pgconn's dialer): a
// reader of the slot shapes its socket's reads so.
func WrapDial(wrap func(pgconn.DialFunc) pgconn.DialFunc) ReplicationOption {
	return func(cfg *pgconn.Config) { cfg.DialFunc = wrap(cfg.DialFunc) }
}

// nameSession names a session "pgtandem" in pg_stat_activity unless the DSN
// names it: the switch's database fence terminates every client session of
// the fenced database except those whose application_name starts with
// "pgtandem".
func nameSession(params map[string]string) {
	if params["application_name"] == "" {
		params["application_name"] = "pgtandem"
	}
}

// TopicOf connects to the cluster at dsn and returns its topic,
// <prefix>-pg<major> (Topic), for a configuration that names none.
func TopicOf(ctx context.Context, dsn, prefix string) (string, error) {
	conn, err := Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var num int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&num); err != nil {
		return "", fmt.Errorf("read the server's version: %w", err)
	}
	return Topic(prefix, num/10000), nil
}
