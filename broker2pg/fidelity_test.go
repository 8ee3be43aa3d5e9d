package broker2pg_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
	"github.com/pgtandem/pgtandem/internal/testwait"
)

// The fidelity tests of issue 12 run a source of one major into a target of
// another through capture, broker and apply, like TestApplyShapes, each on
// a schema of its own.

// pipeline is a source and a target kept in tandem by a running capture
// and apply.
type pipeline struct {
	src, dst *pgx.Conn
	svc      *broker2pg.Service
	broker   *brokertest.Broker
	topic    string
}

// startPipeline creates ddl on both sides, then dstOnly on the target, and
// starts capture and apply.
func startPipeline(t *testing.T, name string, from, to int, ddl, dstOnly string) *pipeline {
	t.Helper()
	srcSrv, src := start(t, from)
	dstSrv, dst := start(t, to)
	b := brokertest.Start(t)
	bothSides(t, src, dst, ddl)
	if dstOnly != "" {
		exec(t, dst, dstOnly)
	}
	topic := fmt.Sprintf("persistent://public/default/%s-%d-%d", name, from, to)
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, _ := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)
	return &pipeline{src: src, dst: dst, svc: svc, broker: b, topic: topic}
}

// applied writes marker n on the source and waits until the target has
// it, so that everything committed before it is applied; an apply that
// blocks on the way fails the test at once, with its reason.
func (p *pipeline) applied(t *testing.T, n int) {
	t.Helper()
	exec(t, p.src, `INSERT INTO marker VALUES ($1)`, n)
	testwait.For(t, 2*time.Minute, fmt.Sprintf("marker %d applied", n), func() error {
		if err := p.svc.Ready(); err != nil && strings.HasPrefix(err.Error(), "blocked: ") {
			t.Fatalf("marker %d not applied, the apply is %v", n, err)
		}
		var ok bool
		if err := p.dst.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM marker WHERE n = $1)`, n).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("not yet (service: %v)", p.svc.Ready())
		}
		return nil
	})
}

// same compares tables as row::text on both sides and names every table
// that differs.
func (p *pipeline) same(t *testing.T, tables ...string) {
	t.Helper()
	for _, table := range tables {
		if err := eventtest.SameRows(p.src, p.dst, table); err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// domainKeySchema has keys whose equality exists only through their base
// type: PostgreSQL resolves no '=' for a domain over an enum (the enum's
// '=' is the polymorphic anyenum one), and the other key types wrap such
// domains in arrays, composites and domains again.
const domainKeySchema = `
CREATE TABLE marker (n int PRIMARY KEY);
CREATE TYPE e AS ENUM ('a', 'b', 'c', 'd', 'e');
CREATE DOMAIN e_d AS e;
CREATE DOMAIN e_dd AS e_d;
CREATE TYPE e_pair AS (x e_d, n int);
CREATE DOMAIN e_pair_d AS e_pair;
CREATE DOMAIN code AS varchar(8) CHECK (VALUE <> '');
CREATE TABLE t (k e_d PRIMARY KEY, v int);
CREATE TABLE t_dd (k e_dd, n int, v text, PRIMARY KEY (k, n));
CREATE TABLE t_arr (k e_d[] PRIMARY KEY, v int);
CREATE TABLE t_comp (k e_pair PRIMARY KEY, v int);
CREATE TABLE t_compd (k e_pair_d PRIMARY KEY, v int);
CREATE TABLE t_code (k code PRIMARY KEY, c e_dd, v int);
CREATE TABLE t_idx (id int, k e_dd NOT NULL, v int);
CREATE UNIQUE INDEX t_idx_k ON t_idx (k);
ALTER TABLE t_idx REPLICA IDENTITY USING INDEX t_idx_k;
CREATE TABLE t_full (k e_d, a e_dd[], p e_pair_d, v int);
ALTER TABLE t_full REPLICA IDENTITY FULL;`

var domainKeyTables = []string{"t", "t_dd", "t_arr", "t_comp", "t_compd", "t_code", "t_idx", "t_full"}

// TestApplyDomainKeys (issue 12 kind 2): UPDATE, key change and DELETE of
// rows whose key is a domain over an enum, a domain over that domain, an
// array of it, a composite holding it, a domain over that composite, or a
// table matched by such whole rows (REPLICA IDENTITY FULL), one change at a
// time and many in one statement.
func TestApplyDomainKeys(t *testing.T) {
	p := startPipeline(t, "domainkeys", 15, 17, domainKeySchema, "")
	steps := []string{
		// The smallest input.
		`INSERT INTO t VALUES ('a', 1), ('b', 2)`,
		`UPDATE t SET v = 10 WHERE k::e = 'a'`,
		`UPDATE t SET k = 'c' WHERE k::e = 'b'`,
		`DELETE FROM t WHERE k::e = 'a'`,
		// Changes of one key compacted in one transaction.
		`BEGIN; INSERT INTO t VALUES ('d', 4); UPDATE t SET v = 5 WHERE k::e = 'd'; DELETE FROM t WHERE k::e = 'c';
		 INSERT INTO t VALUES ('c', 6); UPDATE t SET v = v + 1 WHERE k::e = 'c'; COMMIT`,
		// Hundreds of rows per statement.
		`INSERT INTO t_dd SELECT (enum_range(NULL::e))[1 + g % 5], g, 'r' || g FROM generate_series(1, 300) g`,
		`UPDATE t_dd SET v = v || '!' WHERE n % 3 = 0`,
		`UPDATE t_dd SET k = 'e' WHERE k::e = 'a' AND n < 100`,
		`UPDATE t_dd SET n = n + 1000 WHERE k::e = 'b' AND n < 50`,
		`DELETE FROM t_dd WHERE n % 7 = 0`,
		`INSERT INTO t_arr VALUES ('{a,b}', 1), ('{c}', 2), ('{}', 3), ('{a,NULL}', 4)`,
		`UPDATE t_arr SET v = 20 WHERE k = '{c}'`,
		`UPDATE t_arr SET k = '{b,a}' WHERE k = '{a,b}'`,
		`UPDATE t_arr SET v = 40 WHERE k = '{a,NULL}'`,
		`DELETE FROM t_arr WHERE k = '{}'`,
		`INSERT INTO t_comp VALUES ('(a,1)', 1), ('(b,2)', 2), ('(,3)', 3)`,
		`UPDATE t_comp SET v = 20 WHERE k = '(b,2)'::e_pair`,
		`UPDATE t_comp SET k = '(c,1)' WHERE k = '(a,1)'::e_pair`,
		`UPDATE t_comp SET v = 30 WHERE (k).n = 3`,
		`DELETE FROM t_comp WHERE k = '(b,2)'::e_pair`,
		`INSERT INTO t_compd VALUES ('(a,1)', 1), ('(b,2)', 2)`,
		`UPDATE t_compd SET v = 20 WHERE k = '(b,2)'::e_pair_d`,
		`UPDATE t_compd SET k = '(c,1)' WHERE k = '(a,1)'::e_pair_d`,
		`DELETE FROM t_compd WHERE k = '(b,2)'::e_pair_d`,
		`INSERT INTO t_code VALUES ('x1', 'a', 1), ('x2', 'b', 2)`,
		`UPDATE t_code SET v = 10, c = 'e' WHERE k = 'x1'`,
		`UPDATE t_code SET k = 'x3' WHERE k = 'x2'`,
		`DELETE FROM t_code WHERE k = 'x1'`,
		`INSERT INTO t_idx VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)`,
		`UPDATE t_idx SET v = 10 WHERE k::e = 'a'`,
		`UPDATE t_idx SET k = 'd', v = 20 WHERE k::e = 'b'`,
		`DELETE FROM t_idx WHERE k::e = 'c'`,
		`INSERT INTO t_full VALUES ('a', '{a,b}', '(a,1)', 1), ('a', '{a,b}', '(a,1)', 1), ('b', NULL, NULL, 2)`,
		`UPDATE t_full SET v = 10 WHERE k::e = 'b'`,
		`UPDATE t_full SET k = 'c', a = '{c}' WHERE ctid = (SELECT min(ctid) FROM t_full WHERE k::e = 'a')`,
		`DELETE FROM t_full WHERE k::e = 'a'`,
	}
	for _, sql := range steps {
		exec(t, p.src, sql)
	}
	p.applied(t, 1)
	p.same(t, domainKeyTables...)
}

// identitySchema has identity-always columns that UPDATE cannot set on the
// target: a key (m, m3), a column beside the key (m2), one in a table
// matched by whole rows (m4). m3 also has an unchanged TOAST value, a
// generated column, a by-default identity column and a referencing table.
const identitySchema = `
CREATE TABLE marker (n int PRIMARY KEY);
CREATE TABLE m (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE m2 (id int PRIMARY KEY, seq_col int GENERATED ALWAYS AS IDENTITY, v text);
CREATE TABLE m3 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code int GENERATED BY DEFAULT AS IDENTITY,
  big text, v int, twice int GENERATED ALWAYS AS (v * 2) STORED);
ALTER TABLE m3 ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE m3_child (id int PRIMARY KEY, m3_id bigint REFERENCES m3 ON UPDATE CASCADE ON DELETE CASCADE);
CREATE TABLE m4 (a int, s bigint GENERATED ALWAYS AS IDENTITY, big text);
ALTER TABLE m4 REPLICA IDENTITY FULL;
ALTER TABLE m4 ALTER COLUMN big SET STORAGE EXTERNAL;`

// identityTargetOnly is a user trigger on the target that fails every
// write of m3: the apply session runs with session_replication_role =
// replica, so neither it nor the foreign key's ON DELETE CASCADE fires when
// a row moves to a new key by a delete and a re-insert.
const identityTargetOnly = `
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'user trigger fired: % on %', TG_OP, TG_TABLE_NAME; END$$;
CREATE TRIGGER refuse BEFORE INSERT OR UPDATE OR DELETE ON m3 FOR EACH ROW EXECUTE FUNCTION refuse();`

// TestApplyIdentityChanges (issue 12 kind 3): an UPDATE that changes an
// identity-always column, key or not, leaves the target equal to the
// source, in both directions of an upgrade and its rollback.
func TestApplyIdentityChanges(t *testing.T) {
	for _, pair := range [][2]int{{15, 17}, {17, 15}, {18, 15}} {
		t.Run(fmt.Sprintf("pg%d-to-pg%d", pair[0], pair[1]), func(t *testing.T) {
			t.Parallel()
			testApplyIdentityChanges(t, pair[0], pair[1])
		})
	}
}

func testApplyIdentityChanges(t *testing.T, from, to int) {
	p := startPipeline(t, "identity", from, to, identitySchema, identityTargetOnly)
	steps := []string{
		// The smallest inputs: the key, and a column beside the key.
		`INSERT INTO m (v) VALUES ('b')`,
		`UPDATE m SET id = DEFAULT`,
		`INSERT INTO m2 (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (5, 'e')`,
		`UPDATE m2 SET seq_col = DEFAULT WHERE id = 1`,
		// In one transaction: an update beside one that changes the
		// identity, a key change with and without a new identity, an
		// insert whose identity changes before commit.
		`BEGIN; UPDATE m2 SET v = 'b2' WHERE id = 2; UPDATE m2 SET seq_col = DEFAULT, v = 'c2' WHERE id = 3;
		 UPDATE m2 SET id = 30, seq_col = DEFAULT WHERE id = 3; UPDATE m2 SET id = 50 WHERE id = 5;
		 INSERT INTO m2 (id, v) VALUES (4, 'd'); UPDATE m2 SET seq_col = DEFAULT WHERE id = 4; COMMIT`,
		// Hundreds of rows per statement, half of them with a new identity.
		`INSERT INTO m2 (id, v) SELECT g, 'r' || g FROM generate_series(100, 399) g`,
		`UPDATE m2 SET seq_col = DEFAULT WHERE id >= 100 AND id % 2 = 0`,
		`UPDATE m2 SET v = v || '+' WHERE id >= 100`,
		`UPDATE m SET id = DEFAULT, v = 'all' `,
		// An unchanged TOAST value, a generated column, a by-default
		// identity and a referencing row along a key change; the source
		// cascades the new key into m3_child.
		`INSERT INTO m3 (big, v) VALUES (repeat('x', 5000) || 'one', 1), (repeat('y', 5000) || 'two', 2)`,
		`INSERT INTO m3_child VALUES (1, 1), (2, 2)`,
		`UPDATE m3 SET id = DEFAULT WHERE id = 1`,
		`UPDATE m3 SET id = DEFAULT, v = 20, code = 77 WHERE id = 2`,
		`UPDATE m3 SET code = 78 WHERE v = 1`,
		`DELETE FROM m3 WHERE v = 20`,
		// Matched by whole rows: the old row tells the identity changed.
		`INSERT INTO m4 (a, big) VALUES (1, repeat('z', 5000)), (1, repeat('z', 5000)), (2, 'small')`,
		`UPDATE m4 SET s = DEFAULT WHERE a = 2`,
		`UPDATE m4 SET s = DEFAULT WHERE ctid = (SELECT min(ctid) FROM m4 WHERE a = 1)`,
		`UPDATE m4 SET a = 3, s = DEFAULT WHERE a = 2`,
	}
	for _, sql := range steps {
		exec(t, p.src, sql)
	}
	p.applied(t, 1)
	p.same(t, "m", "m2", "m3", "m3_child", "m4")
}

// truncateSchema has tables the source truncates: with and without
// references, an inheritance parent, a partitioned table, and a table with
// an identity that RESTART IDENTITY resets.
const truncateSchema = `
CREATE TABLE marker (n int PRIMARY KEY);
CREATE TABLE orders (id int PRIMARY KEY);
CREATE TABLE lines (id int PRIMARY KEY, order_id int REFERENCES orders);
CREATE TABLE counters (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v int);
CREATE TABLE inh_parent (id int PRIMARY KEY, v text);
CREATE TABLE inh_child (PRIMARY KEY (id)) INHERITS (inh_parent);
CREATE TABLE part (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu');
CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us');`

// TestApplyTruncateExact (issue 12 kind 5): a TRUNCATE is replayed on
// exactly the tables the source truncated, never with CASCADE: a table
// that exists only on the target and references one of them blocks the
// apply, naming it, with nothing applied past the TRUNCATE, until the
// operator drops the foreign key or the table.
func TestApplyTruncateExact(t *testing.T) {
	p := startPipeline(t, "truncate", 15, 17, truncateSchema, "")
	exec(t, p.src, `INSERT INTO orders VALUES (1), (2); INSERT INTO lines VALUES (10, 1), (20, 2)`)
	p.applied(t, 1)
	exec(t, p.dst, `CREATE TABLE audit (id int PRIMARY KEY, order_id int REFERENCES orders); INSERT INTO audit VALUES (1, 1)`)

	// The smallest input: lines goes with orders on the source (and in
	// the message), audit exists only on the target.
	exec(t, p.src, `TRUNCATE orders CASCADE`)
	exec(t, p.src, `INSERT INTO marker VALUES (2)`)
	waitBlocked(t, p.svc, p.dst, `table "public"."audit"`)
	waitHeldBack(t, p.broker, p.topic, 2)
	checkNotApplied(t, p.dst, 2)
	waitBlocked(t, p.svc, p.dst, `references "public"."orders" by foreign key "audit_order_id_fkey"`)
	var orders, audit int
	if err := p.dst.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM audit)`).Scan(&orders, &audit); err != nil || orders != 2 || audit != 1 {
		t.Fatalf("target while blocked: %d orders, %d audit rows, %v; want 2 and 1", orders, audit, err)
	}
	exec(t, p.dst, `ALTER TABLE audit DROP CONSTRAINT audit_order_id_fkey`)
	// Blocked until the next attempt: waited for without failing on it.
	waitMarker(t, p.src, p.dst, p.svc, 3)
	p.same(t, "orders", "lines", "marker")
	if err := p.dst.QueryRow(context.Background(), `SELECT count(*) FROM audit`).Scan(&audit); err != nil || audit != 1 {
		t.Fatalf("audit after the TRUNCATE: %d rows, %v; want its row kept", audit, err)
	}

	// Both tables named without CASCADE; the operator drops the
	// referencing table this time.
	exec(t, p.src, `INSERT INTO orders VALUES (3); INSERT INTO lines VALUES (30, 3)`)
	p.applied(t, 4)
	exec(t, p.dst, `CREATE TABLE notes (id int PRIMARY KEY, order_id int CONSTRAINT notes_order REFERENCES orders); INSERT INTO notes VALUES (1, 3)`)
	exec(t, p.src, `TRUNCATE orders, lines`)
	exec(t, p.src, `INSERT INTO marker VALUES (5)`)
	waitBlocked(t, p.svc, p.dst, `table "public"."notes"`)
	waitHeldBack(t, p.broker, p.topic, 5)
	checkNotApplied(t, p.dst, 5)
	exec(t, p.dst, `DROP TABLE notes`)
	waitMarker(t, p.src, p.dst, p.svc, 6)
	p.same(t, "orders", "lines", "marker")

	// Exactly the tables named: the inheritance child the source left
	// alone keeps its rows, a partitioned table loses all partitions'
	// rows, and RESTART IDENTITY resets the target's identity too.
	exec(t, p.src, `INSERT INTO inh_parent VALUES (1, 'parent'); INSERT INTO inh_child VALUES (2, 'child');
		INSERT INTO part VALUES (1, 'eu'), (2, 'us'); INSERT INTO counters (v) VALUES (1), (2)`)
	p.applied(t, 7)
	exec(t, p.dst, `SELECT setval(pg_get_serial_sequence('counters', 'id'), 50)`)
	exec(t, p.src, `TRUNCATE ONLY inh_parent`)
	exec(t, p.src, `TRUNCATE part`)
	exec(t, p.src, `TRUNCATE counters RESTART IDENTITY`)
	p.applied(t, 8)
	p.same(t, "ONLY inh_parent", "inh_child", "part", "part_eu", "part_us", "counters", "orders", "lines", "marker")
	var restarted bool
	if err := p.dst.QueryRow(context.Background(), `SELECT NOT is_called AND last_value = 1 FROM counters_id_seq`).Scan(&restarted); err != nil || !restarted {
		t.Fatalf("identity of counters on the target after TRUNCATE RESTART IDENTITY: restarted %v, %v", restarted, err)
	}
}
