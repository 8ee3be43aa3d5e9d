// Command record writes the pgoutput recordings that pg2broker's decoder
// tests read (decode_test.go): it runs one workload on throwaway servers of
// PostgreSQL 13 to 17 and stores what START_REPLICATION sent back, one
// XLogData payload a line. Run it from the repository root, as root or as
// the postgres OS user, when a new major or protocol version should be
// covered:
//
//	go run ./pg2broker/testdata/pgoutput/record
//
// Being under testdata, it is no part of `go build ./...` or `go vet ./...`.
package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtandem/pgtandem/internal/pglocal"
)

const setup = `
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE item (id int PRIMARY KEY, name text, big text, m mood, price numeric(10,2));
ALTER TABLE item ALTER big SET STORAGE EXTERNAL;
CREATE TABLE dup (a int, b text);
ALTER TABLE dup REPLICA IDENTITY FULL;
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE counter (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int);
CREATE SCHEMA pgtandem;
CREATE TABLE pgtandem.apply_progress (source_cluster text PRIMARY KEY, commit_lsn pg_lsn);
CREATE PUBLICATION pgtandem FOR ALL TABLES;
SELECT pg_replication_origin_create('pgtandem_peer');
SELECT pg_replication_origin_create('other_peer');
`

// workload is one transaction an entry, committed with the replication
// origin named (none when empty); decode_test.go expects exactly these, in
// this order.
var workload = []transaction{
	{"", `INSERT INTO item VALUES (1, 'one', repeat('x', 5000), 'happy', 1.50), (2, NULL, 'small', NULL, NULL)`},
	{"", `UPDATE item SET name = 'uno' WHERE id = 1`},
	{"", `UPDATE item SET id = 10 WHERE id = 2`},
	{"", `DELETE FROM item WHERE id = 10`},
	{"", `INSERT INTO dup VALUES (1, 'a'), (1, 'a');
	 UPDATE dup SET b = 'b' WHERE ctid = (SELECT min(ctid) FROM dup);
	 DELETE FROM dup WHERE b = 'a'`},
	{"", `INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1); INSERT INTO counter (v) VALUES (7)`},
	{"", `TRUNCATE parent, counter RESTART IDENTITY CASCADE`},
	// Logical messages need protocol 2 (PostgreSQL 14); the second one is
	// not transactional and arrives outside any transaction.
	{"", `SELECT pg_logical_emit_message(true, 'pgtandem-test', 'hello'); SELECT pg_logical_emit_message(false, 'pgtandem-test', 'outside')`},
	{"pgtandem_peer", `INSERT INTO item VALUES (3, 'three', NULL, 'sad', 3)`},
	{"other_peer", `INSERT INTO item VALUES (4, 'four', NULL, NULL, 4)`},
	{"", `BEGIN;
	 INSERT INTO pgtandem.apply_progress VALUES ('old', '0/1');
	 INSERT INTO item VALUES (5, 'five', NULL, NULL, NULL);
	 UPDATE pgtandem.apply_progress SET commit_lsn = '0/2';
	 COMMIT`},
	{"", `UPDATE pgtandem.apply_progress SET commit_lsn = '0/3'`},
}

type transaction struct{ origin, sql string }

type recording struct{ major, proto int }

func main() {
	dir := filepath.Join("pg2broker", "testdata", "pgoutput")
	for _, r := range []recording{{13, 1}, {14, 2}, {15, 3}, {16, 4}, {17, 4}} {
		if err := record(dir, r); err != nil {
			log.Fatalf("PostgreSQL %d, protocol %d: %v", r.major, r.proto, err)
		}
	}
}

func record(dir string, r recording) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := pglocal.Start(ctx, pglocal.Options{Major: r.major, Settings: map[string]string{
		// An autovacuum's ANALYZE would add an empty transaction before
		// PostgreSQL 15, which skips them.
		"autovacuum": "off",
	}})
	if err != nil {
		return err
	}
	defer srv.Remove(context.Background())
	conn, err := pgx.Connect(ctx, srv.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, setup); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('record', 'pgoutput')`); err != nil {
		return err
	}
	var version string
	if err := conn.QueryRow(ctx, `SHOW server_version`).Scan(&version); err != nil {
		return err
	}

	commits := 0
	for _, txn := range workload {
		if r.proto < 2 && strings.Contains(txn.sql, "pg_logical_emit_message") {
			continue
		}
		// The origin is the session's when the transaction commits, so it
		// is set and reset in statements of their own.
		statements := []string{txn.sql}
		if txn.origin != "" {
			statements = []string{"SELECT pg_replication_origin_session_setup('" + txn.origin + "')", txn.sql, "SELECT pg_replication_origin_session_reset()"}
		}
		for _, sql := range statements {
			if _, err := conn.Exec(ctx, sql); err != nil {
				return fmt.Errorf("%s: %w", sql, err)
			}
		}
		commits++
	}

	args := []string{fmt.Sprintf("proto_version '%d'", r.proto), "publication_names 'pgtandem'"}
	if r.proto >= 2 {
		args = append(args, "messages 'true'")
	}
	messages, err := receive(ctx, srv.DSN("postgres")+"&replication=database", args, commits)
	if err != nil {
		return err
	}

	name := fmt.Sprintf("v%d-pg%d.txt", r.proto, r.major)
	var b strings.Builder
	fmt.Fprintf(&b, "# pgoutput (%s) from PostgreSQL %s, written by record/main.go\n", strings.Join(args, ", "), version)
	b.WriteString("# one XLogData message a line: its WAL start, then its payload in hex\n")
	b.WriteString(messages)
	return os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644)
}

// receive reads the slot until commits transactions have ended.
func receive(ctx context.Context, dsn string, args []string, commits int) (string, error) {
	repl, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer repl.Close(context.Background())
	if err := pglogrepl.StartReplication(ctx, repl, "record", 0, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		return "", err
	}
	var b strings.Builder
	for commits > 0 {
		raw, err := repl.ReceiveMessage(ctx)
		if err != nil {
			return "", err
		}
		msg, ok := raw.(*pgproto3.CopyData)
		if !ok || len(msg.Data) == 0 || msg.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %s\n", xld.WALStart, hex.EncodeToString(xld.WALData))
		if pglogrepl.MessageType(xld.WALData[0]) == pglogrepl.MessageTypeCommit {
			commits--
		}
	}
	return b.String(), nil
}
