package eventtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/pgtest"
)

// SessionDefaults are a cluster's defaults for the settings that shape text
// forms, at the three levels PostgreSQL reads them: the server's
// configuration, ALTER DATABASE postgres SET and ALTER ROLE postgres SET.
// Each level overrides some of the level below, so every level decides
// some setting of a new session.
type SessionDefaults struct {
	Server, Database, Role map[string]string
}

// OddSource are a source's defaults under which an unpinned session prints
// dates day first with month names and zone abbreviations ('Postgres, DMY',
// IST of Asia/Kolkata, which input reads as Israel's), intervals in
// sql_standard (one leading sign for all fields), floats rounded, money the
// German way and text in LATIN1.
var OddSource = SessionDefaults{
	Server: map[string]string{"DateStyle": "SQL, DMY", "IntervalStyle": "postgres_verbose", "extra_float_digits": "0",
		"TimeZone": "America/Caracas", "bytea_output": "escape", "lc_monetary": "de_DE.UTF-8"},
	Database: map[string]string{"DateStyle": "Postgres, DMY", "IntervalStyle": "sql_standard", "TimeZone": "Asia/Kolkata"},
	Role:     map[string]string{"extra_float_digits": "-1", "client_encoding": "LATIN1"},
}

// OddTarget are a target's defaults under which an unpinned session reads
// dates month first, intervals with a sign per field, refuses XML fragments,
// reads an unquoted NULL in an array as the string "NULL", takes bytes as
// WIN1252 and backslashes in literals as escapes.
var OddTarget = SessionDefaults{
	Server: map[string]string{"DateStyle": "German, DMY", "IntervalStyle": "iso_8601", "extra_float_digits": "-3",
		"TimeZone": "Pacific/Chatham", "bytea_output": "escape", "xmloption": "document"},
	Database: map[string]string{"DateStyle": "ISO, YMD", "array_nulls": "off", "client_encoding": "WIN1252", "lc_monetary": "de_DE.UTF-8"},
	Role: map[string]string{"DateStyle": "SQL, MDY", "IntervalStyle": "postgres_verbose", "TimeZone": "America/St_Johns",
		"standard_conforming_strings": "off", "lc_monetary": "C"},
}

// Options are the server-level defaults for pgtest.Start.
func (d SessionDefaults) Options() []pgtest.Option {
	var opts []pgtest.Option
	for name, value := range d.Server {
		opts = append(opts, pgtest.WithSetting(name, quote(value)))
	}
	return opts
}

// Set stores the database and role defaults on srv; sessions opened
// afterwards start with them.
func (d SessionDefaults) Set(t testing.TB, srv *pglocal.Server) {
	t.Helper()
	conn := ConnectPinned(t, srv)
	for _, level := range []struct {
		alter    string
		settings map[string]string
	}{{"ALTER DATABASE postgres", d.Database}, {"ALTER ROLE postgres", d.Role}} {
		for name, value := range level.settings {
			sql := fmt.Sprintf("%s SET %s = %s", level.alter, name, quote(value))
			if _, err := conn.Exec(context.Background(), sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ConnectPinned opens a session on database postgres of srv that reads and
// writes text forms in fixed settings of the test's own, whatever the
// server's, database's and role's defaults: where tests compare values.
func ConnectPinned(t testing.TB, srv *pglocal.Server) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{"DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC",
		"extra_float_digits": "3", "bytea_output": "hex", "lc_monetary": "C", "client_encoding": "UTF8",
		"xmloption": "content", "array_nulls": "on", "standard_conforming_strings": "on"} {
		cfg.RuntimeParams[name] = value
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to PostgreSQL %d in fixed settings: %v", srv.Major, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// SettingsSchema has a column of every type whose text form depends on a
// session setting, alone, in arrays and in ranges; a table without key
// (matched by whole rows) and one keyed by such types.
const SettingsSchema = `
CREATE TABLE vals (
  id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz, t time, ttz timetz, iv interval,
  f4 float4, f8 float8, n numeric, m money, b bytea, x xml, s text,
  da date[], tstza timestamptz[], iva interval[], f4a float4[], f8a float8[], ma money[], ba bytea[], sa text[],
  dr daterange, tsr tsrange, tstzr tstzrange, nr numrange, pt point
);
CREATE TABLE vals_nokey (id int, d date, tstz timestamptz, iv interval, f8 float8, m money, b bytea, x xml, s text, sa text[]);
ALTER TABLE vals_nokey REPLICA IDENTITY FULL;
CREATE TABLE by_time (d date, tstz timestamptz, iv interval, v text, PRIMARY KEY (d, tstz, iv));
`

// SettingsTables are the tables of SettingsSchema.
var SettingsTables = []string{"vals", "vals_nokey", "by_time"}

// SettingsRows inserts rows with literals read in OddSource's settings
// ('22/07/2024' is 22 July, '-1 2:03:04' is minus a day and minus two
// hours, a timestamptz without zone is Kolkata's).
const SettingsRows = `
INSERT INTO vals VALUES
 (1, '22/07/2024', '22/07/2024 13:14:15.123456', '22/07/2024 13:14:15.5', '13:14:15.999999', '13:14:15', '-1 2:03:04',
  '1.0000001', 0.1::float8 + 0.2, 1234.5678, 1234.56::money, decode('00ff5c27', 'hex'), 'fragment <a>1</a> tail', 'caf' || chr(233),
  ARRAY['22/07/2024'::date, '04/03/2024'], ARRAY['22/07/2024 23:59:59.999999'::timestamptz, '-infinity'],
  ARRAY['-1 2:03:04'::interval, '-1 +2:03:04', '+1-2 -3 +4:05:06.7'],
  ARRAY['1.0000001'::float4, 1e-45], ARRAY[0.1::float8 + 0.2, 1e-300, 5e-324, 2.2250738585072e-309, '-0', 'NaN', '-Infinity'],
  ARRAY[1234.56::money, (-0.01)::money], ARRAY[decode('00', 'hex'), decode('5c', 'hex'), NULL], ARRAY[NULL, 'NULL', 'x y'],
  '[22/07/2024,01/08/2024)', '[22/07/2024 10:00,23/07/2024 10:00)', '[22/07/2024 10:00,infinity)', '(0.1,0.30000000000000004]',
  point(0.1::float8 + 0.2, 1e-300)),
 (2, '04/03/2024', '04/03/2024 00:00', '04/03/2024 00:00', '00:00', '23:59:59.5-03:30', '-1-2',
  1e-45, 5e-324, -0.5, (-1234567.89)::money, '', XMLPARSE(DOCUMENT '<!DOCTYPE a><a>1</a>'), '',
  '{}', NULL, ARRAY['1 -2:00:00'::interval], NULL, NULL, NULL, '{}', '{}', 'empty', NULL, NULL, NULL, NULL),
 (3, 'infinity', '-infinity', '-infinity', '24:00', '00:00+14', '-178000000-0',
  'NaN', 'Infinity', 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO vals_nokey VALUES
 (1, '22/07/2024', '22/07/2024 13:14:15.5', '-1 2:03:04', 0.1::float8 + 0.2, 1234.56::money, decode('5c00', 'hex'), 'a<b/>c', 'caf' || chr(233), ARRAY[NULL, 'NULL']),
 (1, '22/07/2024', '22/07/2024 13:14:15.5', '-1 2:03:04', 0.1::float8 + 0.2, 1234.56::money, decode('5c00', 'hex'), 'a<b/>c', 'caf' || chr(233), ARRAY[NULL, 'NULL']),
 (2, '04/03/2024', '04/03/2024 00:00', '-1 +2:03:04', 1e-300, (-0.01)::money, '', '', '', '{}');
INSERT INTO by_time VALUES
 ('22/07/2024', '22/07/2024 13:14:15.5', '-1 2:03:04', 'a'),
 ('04/03/2024', '04/03/2024 00:00', '-1 +2:03:04', 'b'),
 ('01/02/2024', '01/02/2024 12:00', '+1-2 -3 +4:05:06.7', 'c');
`

// SettingsChanges updates and deletes those rows: keyed by id, by
// whole rows without key, and by keys of dates, timestamps and intervals.
const SettingsChanges = `
UPDATE vals SET iv = iv - '1 0:00:00', tstz = tstz + '0 1:00:00', f8 = f8 * 3, d = d + 1 WHERE id = 2;
DELETE FROM vals WHERE id = 3;
UPDATE vals_nokey SET s = s || '!' WHERE id = 2;
DELETE FROM vals_nokey WHERE ctid = (SELECT min(ctid) FROM vals_nokey WHERE id = 1);
UPDATE by_time SET v = 'changed' WHERE v = 'a';
DELETE FROM by_time WHERE v = 'b';
UPDATE by_time SET d = d + 1, iv = -iv WHERE v = 'c';
`

// CheckSettingsValues checks, in a session of ConnectPinned, that the rows
// of SettingsRows and SettingsChanges hold the values the source meant:
// rows equal on both sides could still both be wrong.
func CheckSettingsValues(conn *pgx.Conn, changed bool) error {
	want := map[string]string{
		`SELECT d::text FROM vals WHERE id = 1`:                        "2024-07-22",
		`SELECT tstz::text FROM vals WHERE id = 1`:                     "2024-07-22 07:44:15.5+00",
		`SELECT ttz::text FROM vals WHERE id = 1`:                      "13:14:15+05:30",
		`SELECT iv::text FROM vals WHERE id = 1`:                       "-1 days -02:03:04",
		`SELECT f4::text FROM vals WHERE id = 1`:                       "1.0000001",
		`SELECT f8::text FROM vals WHERE id = 1`:                       "0.30000000000000004",
		`SELECT m::text FROM vals WHERE id = 1`:                        "$1,234.56",
		`SELECT b::text FROM vals WHERE id = 1`:                        `\x00ff5c27`,
		`SELECT x::text FROM vals WHERE id = 1`:                        "fragment <a>1</a> tail",
		`SELECT s FROM vals WHERE id = 1`:                              "café",
		`SELECT iva::text FROM vals WHERE id = 1`:                      `{"-1 days -02:03:04","-1 days +02:03:04","1 year 2 mons -3 days +04:05:06.7"}`,
		`SELECT f8a::text FROM vals WHERE id = 1`:                      "{0.30000000000000004,1e-300,5e-324,2.2250738585072e-309,-0,NaN,-Infinity}",
		`SELECT (sa[1] IS NULL)::text || sa[2] FROM vals WHERE id = 1`: "trueNULL",
		`SELECT tstzr::text FROM vals WHERE id = 1`:                    `["2024-07-22 04:30:00+00",infinity)`,
		`SELECT pt::text FROM vals WHERE id = 1`:                       "(0.30000000000000004,1e-300)",
		`SELECT count(*)::text FROM vals_nokey`:                        "3",
		`SELECT count(*)::text FROM by_time`:                           "3",
	}
	if changed {
		want[`SELECT d::text || ' ' || iv::text FROM vals WHERE id = 2`] = "2024-03-05 -1 years -2 mons -1 days"
		want[`SELECT count(*)::text FROM vals_nokey`] = "2"
		want[`SELECT count(*)::text FROM by_time`] = "2"
		want[`SELECT string_agg(v || ' ' || d::text || ' ' || iv::text, ', ' ORDER BY v) FROM by_time`] =
			"c 2024-02-02 -1 years -2 mons +3 days -04:05:06.7, changed 2024-07-22 -1 days -02:03:04"
	} else {
		want[`SELECT d::text FROM vals WHERE id = 2`] = "2024-03-04"
	}
	var errs []string
	for query, value := range want {
		var got string
		if err := conn.QueryRow(context.Background(), query).Scan(&got); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", query, err))
		} else if got != value {
			errs = append(errs, fmt.Sprintf("%s = %q, want %q", query, got, value))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("values differ from what the source meant:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}
