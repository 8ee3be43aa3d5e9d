package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// minMajor is the oldest PostgreSQL whose pgoutput has what capture needs.
const minMajor = 11

// SourceInfo is what the checks learned about a source cluster.
type SourceInfo struct {
	Major    int
	SystemID string
	Database string
}

// PrepareSource checks what capture needs of a source (version, wal_level,
// encoding, a replica identity on every table, the same one on every leaf
// partition as on its root) and makes sure the
// publication exists, creating it when create is set. `pgtandem init` calls
// it before it creates the slot.
func PrepareSource(ctx context.Context, conn *pgx.Conn, create bool) (SourceInfo, error) {
	var info SourceInfo
	var versionNum int
	var walLevel, encoding string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('wal_level'),
		current_setting('server_encoding'), (SELECT system_identifier::text FROM pg_control_system()), current_database()`).
		Scan(&versionNum, &walLevel, &encoding, &info.SystemID, &info.Database)
	if err != nil {
		return info, fmt.Errorf("preflight: read server settings: %w", err)
	}
	info.Major = versionNum / 10000
	if info.Major < minMajor {
		return info, &PreflightError{Check: "version", Detail: fmt.Sprintf("PostgreSQL %d is older than %d", info.Major, minMajor)}
	}
	if walLevel != "logical" {
		return info, &PreflightError{Check: "wal_level", Detail: fmt.Sprintf("wal_level is %q, logical decoding needs logical",
			walLevel), Fix: "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"}
	}
	if encoding != "UTF8" {
		return info, &PreflightError{Check: "encoding", Detail: fmt.Sprintf("server_encoding is %s; events carry text values as UTF-8 JSON, so only UTF8 databases are captured losslessly", encoding)}
	}
	if err := checkReplicaIdentity(ctx, conn); err != nil {
		return info, err
	}
	if err := checkPartitionIdentity(ctx, conn, info.Major); err != nil {
		return info, err
	}
	return info, ensurePublication(ctx, conn, info.Major, create)
}

// checkReplicaIdentity lists every table whose UPDATE/DELETE a FOR ALL
// TABLES publication could not replicate.
func checkReplicaIdentity(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
		  AND (c.relreplident = 'n'
		       OR (c.relreplident = 'd' AND NOT EXISTS (
		             SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
		ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("preflight: list tables without replica identity: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("preflight: list tables without replica identity: %w", err)
	}
	if len(tables) > 0 {
		return &ReplicaIdentityError{Tables: tables}
	}
	return nil
}

// identityColumns is the SQL of the columns, by name in name order, that
// relation c logs in an old row: all for FULL, the primary key's for
// DEFAULT, the identity index's for USING INDEX, none for NOTHING.
const identityColumns = `CASE c.relreplident
	WHEN 'f' THEN ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1)
	WHEN 'n' THEN '{}'::text[]
	ELSE ARRAY(SELECT a.attname::text FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid
	             AND a.attnum = ANY ((x.indkey::int2[])[0:x.indnkeyatts - 1])
	           WHERE x.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN x.indisprimary ELSE x.indisreplident END ORDER BY 1)
	END`

// checkPartitionIdentity finds the leaf partitions whose replica identity
// differs from their root's. Published through its root (13 and later),
// a change of a partition is described with the root's identity, but
// PostgreSQL logs its old row with the partition's own: under a root with
// REPLICA IDENTITY FULL, a partition with a primary key logs only the key,
// and the apply would match every column against an old row that holds
// just the key. Intermediate partitioned tables hold no rows, so only
// leaves count.
func checkPartitionIdentity(ctx context.Context, conn *pgx.Conn, major int) error {
	if major < 13 {
		return nil // each partition is published on its own, with its own identity
	}
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', rn.nspname, r.relname), r.relreplident::text, ri.cols,
		       ARRAY(SELECT a.attname::text FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid
		               AND a.attnum = ANY ((x.indkey::int2[])[0:x.indnkeyatts - 1])
		             WHERE x.indrelid = r.oid AND x.indisprimary ORDER BY 1),
		       format('%I.%I', ln.nspname, l.relname), l.relreplident::text, li.cols,
		       coalesce((SELECT format('%I', i.relname) FROM pg_index rx, pg_index lx JOIN pg_class i ON i.oid = lx.indexrelid
		                 WHERE rx.indrelid = r.oid AND rx.indisreplident AND lx.indrelid = l.oid
		                   AND rx.indexrelid IN (SELECT relid FROM pg_partition_ancestors(lx.indexrelid))), '')
		FROM pg_class r
		JOIN pg_namespace rn ON rn.oid = r.relnamespace
		CROSS JOIN LATERAL (SELECT `+identityColumns+` AS cols FROM pg_class c WHERE c.oid = r.oid) ri
		CROSS JOIN LATERAL pg_partition_tree(r.oid) t
		JOIN pg_class l ON l.oid = t.relid
		JOIN pg_namespace ln ON ln.oid = l.relnamespace
		CROSS JOIN LATERAL (SELECT `+identityColumns+` AS cols FROM pg_class c WHERE c.oid = l.oid) li
		WHERE r.relkind = 'p' AND NOT r.relispartition AND r.relpersistence = 'p'
		  AND rn.nspname NOT IN ('pg_catalog', 'information_schema') AND rn.nspname NOT LIKE 'pg\_toast%'
		  AND t.isleaf AND l.relkind = 'r' AND l.relpersistence = 'p'
		  AND coalesce((SELECT pubviaroot FROM pg_publication WHERE pubname = $1), true)
		ORDER BY 1, 5`, PublicationName)
	if err != nil {
		return fmt.Errorf("preflight: list the replica identity of partitions: %w", err)
	}
	type leaf struct {
		root, rootKind, name, kind, index string
		rootCols, rootKey, cols           []string
	}
	leaves, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (leaf, error) {
		var l leaf
		err := row.Scan(&l.root, &l.rootKind, &l.rootCols, &l.rootKey, &l.name, &l.kind, &l.cols, &l.index)
		return l, err
	})
	if err != nil {
		return fmt.Errorf("preflight: list the replica identity of partitions: %w", err)
	}
	perr := &PartitionIdentityError{}
	for i := 0; i < len(leaves); {
		root := leaves[i]
		var wrong []leaf
		j := i
		for ; j < len(leaves) && leaves[j].root == root.root; j++ {
			if !slices.Equal(leaves[j].cols, root.rootCols) {
				wrong = append(wrong, leaves[j])
			}
		}
		for _, l := range wrong {
			perr.Partitions = append(perr.Partitions, PartitionIdentity{
				Root: l.root, Partition: l.name,
				RootIdentity:      describeIdentity(l.rootKind, l.rootCols),
				PartitionIdentity: describeIdentity(l.kind, l.cols),
				Fix:               leafIdentityFix(l.name, l.rootKind, l.index),
			})
		}
		// Every partition logs the same key, the root's primary key: the
		// root can take the partitions' identity instead.
		if len(wrong) == j-i && len(root.rootKey) > 0 && !slices.ContainsFunc(wrong, func(l leaf) bool { return !slices.Equal(l.cols, root.rootKey) }) {
			perr.RootFixes = append(perr.RootFixes, "ALTER TABLE "+root.root+" REPLICA IDENTITY DEFAULT;")
		}
		i = j
	}
	if len(perr.Partitions) > 0 {
		return perr
	}
	return nil
}

func describeIdentity(kind string, cols []string) string {
	switch kind {
	case "f":
		return "FULL"
	case "n":
		return "NOTHING"
	case "d":
		if len(cols) == 0 {
			return "DEFAULT without primary key"
		}
		return "DEFAULT (" + strings.Join(cols, ", ") + ")"
	}
	return "USING INDEX (" + strings.Join(cols, ", ") + ")"
}

// leafIdentityFix is the statement that gives a partition its root's
// replica identity; index is the partition's part of the root's identity
// index.
func leafIdentityFix(partition, rootKind, index string) string {
	switch rootKind {
	case "f":
		return "ALTER TABLE " + partition + " REPLICA IDENTITY FULL;"
	case "i":
		if index != "" {
			return "ALTER TABLE " + partition + " REPLICA IDENTITY USING INDEX " + index + ";"
		}
		return "ALTER TABLE " + partition + " REPLICA IDENTITY USING INDEX <its partition of the root's identity index>;"
	}
	return "ALTER TABLE " + partition + " REPLICA IDENTITY DEFAULT;"
}

func ensurePublication(ctx context.Context, conn *pgx.Conn, major int, create bool) error {
	var exists, allTables bool
	err := conn.QueryRow(ctx, `SELECT true, puballtables FROM pg_publication WHERE pubname = $1`, PublicationName).Scan(&exists, &allTables)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("preflight: read publication %s: %w", PublicationName, err)
	}
	if exists {
		if !allTables {
			return &PreflightError{Check: "publication", Detail: fmt.Sprintf("publication %s is not FOR ALL TABLES, so new tables would be missed", PublicationName),
				Fix: fmt.Sprintf("DROP PUBLICATION %s; then pgtandem init (or pg2broker --create-slot)", PublicationName)}
		}
		return nil
	}
	if !create {
		return &PreflightError{Check: "publication", Detail: fmt.Sprintf("publication %s does not exist", PublicationName),
			Fix: "run pgtandem init, or start pg2broker with --create-slot"}
	}
	// Created before the slot: pgoutput reads publications with the slot's
	// historic snapshot and would not see a newer one.
	sql := "CREATE PUBLICATION " + PublicationName + " FOR ALL TABLES"
	if major >= 13 {
		sql += " WITH (publish_via_partition_root = true)"
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("preflight: create publication %s: %w", PublicationName, err)
	}
	return nil
}

// PreflightError is a condition of the source that makes capture impossible
// or unsafe; Fix says what to run.
type PreflightError struct {
	Check  string
	Detail string
	Fix    string
}

func (e *PreflightError) Error() string {
	msg := "preflight " + e.Check + ": " + e.Detail
	if e.Fix != "" {
		msg += "\n  fix: " + e.Fix
	}
	return msg
}

// ReplicaIdentityError lists the tables whose UPDATE and DELETE cannot be
// captured: no primary key and REPLICA IDENTITY DEFAULT, or NOTHING. A FOR
// ALL TABLES publication would make those statements fail on the primary, so
// it is never created while this error stands.
type ReplicaIdentityError struct {
	Tables []string // quoted schema.table
}

func (e *ReplicaIdentityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "preflight replica identity: %d table(s) have no primary key and REPLICA IDENTITY DEFAULT or NOTHING; their UPDATE and DELETE cannot be replicated:", len(e.Tables))
	for _, t := range e.Tables {
		fmt.Fprintf(&b, "\n  ALTER TABLE %s REPLICA IDENTITY FULL;", t)
	}
	b.WriteString("\n  (or add a primary key, or REPLICA IDENTITY USING INDEX on a unique index of NOT NULL columns)")
	return b.String()
}

// PartitionIdentity is a leaf partition whose replica identity differs from
// that of the root its changes are published through.
type PartitionIdentity struct {
	Root, Partition                 string // quoted schema.table
	RootIdentity, PartitionIdentity string // FULL, DEFAULT (id, region), USING INDEX (a), NOTHING
	// Fix gives the partition its root's identity.
	Fix string
}

// PartitionIdentityError lists the leaf partitions whose replica identity
// differs from their root's. Changes of a partitioned table are published
// through its root and described with the root's identity, while each old
// row is logged with the partition's own: the apply would match an UPDATE
// or DELETE on columns the old row does not hold. Capture and init refuse
// to start while it stands.
type PartitionIdentityError struct {
	Partitions []PartitionIdentity
	// RootFixes give a root its partitions' identity instead, where every
	// partition of it logs the root's primary key.
	RootFixes []string
}

func (e *PartitionIdentityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "preflight partition replica identity: %d partition(s) have another replica identity than the partitioned table their changes are published through; PostgreSQL logs their old rows with the partition's identity but describes them with the root's, so their UPDATE and DELETE could not be matched on the target:", len(e.Partitions))
	for _, p := range e.Partitions {
		fmt.Fprintf(&b, "\n  %s is %s, its root %s is %s", p.Partition, p.PartitionIdentity, p.Root, p.RootIdentity)
	}
	b.WriteString("\n  fix, each partition like its root:")
	for _, p := range e.Partitions {
		b.WriteString("\n  " + p.Fix)
	}
	if len(e.RootFixes) > 0 {
		b.WriteString("\n  or each root like its partitions:")
		for _, f := range e.RootFixes {
			b.WriteString("\n  " + f)
		}
	}
	return b.String()
}
