package demo

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/pglocal"
)

// appDatabase is the sample application's database on both servers.
const appDatabase = "app"

// sampleSchema adds to pgbench's tables what a real application has and a
// rehearsal must prove it carries: extension and enum types, arrays, json,
// binary data, a table without key and a partitioned table.
const sampleSchema = `
-- pgbench creates its history without key; init's preflight asks for this.
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
CREATE EXTENSION citext;
CREATE TYPE tier AS ENUM ('free', 'pro', 'enterprise');
CREATE TABLE customers (
	id bigserial PRIMARY KEY,
	email citext NOT NULL,
	tier tier NOT NULL,
	balance numeric(14,2) NOT NULL,
	tags text[],
	prefs jsonb,
	avatar bytea,
	last_ip inet,
	api_key uuid,
	seen_at timestamptz
);
CREATE TABLE audit_log (at timestamptz NOT NULL, who text, what text);
ALTER TABLE audit_log REPLICA IDENTITY FULL;
CREATE TABLE orders (id bigint, region text, customer_id bigint, amount numeric(12,2), placed_at timestamptz,
	PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu');
CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us');
CREATE TABLE orders_apac PARTITION OF orders FOR VALUES IN ('apac');
CREATE TABLE load_ticks (txn bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE demo_marker (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
INSERT INTO customers (email, tier, balance, tags, prefs, avatar, last_ip, api_key, seen_at)
SELECT 'User' || g || '@Example.com', (ARRAY['free', 'pro', 'enterprise'])[g % 3 + 1]::tier, g * 0.25,
	ARRAY['t' || g % 7, NULL], jsonb_build_object('lang', 'en', 'n', g), decode(md5(g::text), 'hex'),
	('10.0.' || g % 250 || '.' || g % 200)::inet, md5(g::text)::uuid, '2026-01-01'::timestamptz + g * interval '1 second'
FROM generate_series(1, 20000) g;
INSERT INTO audit_log SELECT '2026-01-01'::timestamptz + g * interval '1 minute', 'seed', 'row ' || g FROM generate_series(1, 2000) g;
INSERT INTO audit_log SELECT '2026-01-01', 'seed', 'duplicate' FROM generate_series(1, 3);
INSERT INTO orders SELECT g, (ARRAY['eu', 'us', 'apac'])[g % 3 + 1], g % 20000 + 1, g % 1000 + 0.99, '2026-01-01'
FROM generate_series(1, 30000) g;
`

// createSampleDatabase creates the application database on both servers,
// fills old with pgbench's tables at scale and the sample schema, and leaves
// new empty for the initial copy.
func createSampleDatabase(ctx context.Context, old, new *pglocal.Server, scale int) error {
	for _, srv := range []*pglocal.Server{old, new} {
		if err := execSQL(ctx, srv.DSN("postgres"), "CREATE DATABASE "+appDatabase); err != nil {
			return fmt.Errorf("create database %s on PostgreSQL %d: %w", appDatabase, srv.Major, err)
		}
	}
	bin, err := pglocal.FindBinaries(old.Major)
	if err != nil {
		return err
	}
	// --quiet: a progress line every 5 s instead of every 100,000 rows.
	cmd := exec.CommandContext(ctx, bin.Path("pgbench"), "--initialize", "--quiet", "--scale", strconv.Itoa(scale),
		"--host", "127.0.0.1", "--port", strconv.Itoa(old.Port), "--username", "postgres", appDatabase)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgbench --initialize on PostgreSQL %d: %w\n%s", old.Major, err, out.Bytes())
	}
	if err := execSQL(ctx, old.DSN(appDatabase), sampleSchema); err != nil {
		return fmt.Errorf("create the sample schema on PostgreSQL %d: %w", old.Major, err)
	}
	return nil
}

func execSQL(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
