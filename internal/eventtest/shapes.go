package eventtest

// ShapesSchema creates the tables of the data shapes every capture and apply
// test runs through (../shared/FAULTS.md items 10–20): unchanged TOAST,
// single and composite keys, tables without key (REPLICA IDENTITY FULL),
// TRUNCATE with a foreign key, a partitioned table, generated and identity
// columns, identifiers that need quoting, a COPY target, and a table with
// one column of each tricky type.
const ShapesSchema = `
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE marker (n int PRIMARY KEY);
CREATE TABLE toast (id int PRIMARY KEY, big text, small int);
ALTER TABLE toast ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE pk1 (id int PRIMARY KEY, v text);
CREATE TABLE pk2 (a int, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE nokey (x int, y text, doc xml);
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE nokey_big (x int, y text);
ALTER TABLE nokey_big REPLICA IDENTITY FULL;
CREATE TABLE parent_t (id int PRIMARY KEY);
CREATE TABLE child_t (id int PRIMARY KEY, parent int REFERENCES parent_t);
CREATE TABLE part (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu');
CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us');
CREATE TABLE gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
CREATE TABLE "Weird Table" ("select" int PRIMARY KEY, "Quote""d" text, "UPPER" text);
CREATE TABLE copied (id int PRIMARY KEY, v text);
CREATE TABLE types (
  id int PRIMARY KEY, n numeric, big numeric, f float8, f2 float8, d date, ts timestamptz,
  arr text[], md int[][], b bytea, u text, m mood, dom posint, c pair, r int4range,
  j jsonb, x xml, h hstore, ci citext, iv interval, uid uuid
);`

// ShapesTypesRow fills table types with values whose text form must
// survive byte for byte (FAULTS item 17).
const ShapesTypesRow = `INSERT INTO types VALUES (
  1, 'NaN', repeat('9', 1000)::numeric, 'Infinity', '-Infinity', '-infinity', 'infinity',
  ARRAY[NULL, 'NULL', 'a,b', 'say "hi"', E'back\\slash', ''], '{{1,2},{3,4}}', '\x00ff00'::bytea,
  'emoji 😀 ünïcødé', 'happy', 7, ROW(1, 'x, "y"'), '[1,10)', '{"k": [1, null, "v"]}',
  '<a b="c">t</a>', 'k=>v, "n"=>NULL', 'MiXeD', '1 year 2 days', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')`
