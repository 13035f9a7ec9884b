-- The catalog reads behind the schema snapshot (`sql/schema.sql`, tools/schema_snapshot.py): every object of schema
-- `tidebase` as Postgres itself prints it, each list in a stable order (names compared bytewise), so two databases
-- with the same schema give the same text on the same major version of Postgres.

-- name: schema_server_version
-- The server's major version (pg_get_* output may differ between major versions).
SELECT current_setting('server_version_num')::integer / 10000 AS major

-- name: schema_tables
-- Every table of the schema with its storage options.
SELECT c.oid, c.relname AS name, coalesce(array_to_string(c.reloptions, ', '), '') AS options
  FROM pg_class c
 WHERE c.relnamespace = 'tidebase'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname COLLATE "C"

-- name: schema_columns
-- The columns of one table, in order: type, default or identity, not null.
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr, a.attidentity AS identity, a.attgenerated AS generated
  FROM pg_attribute a
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %(table)s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum

-- name: schema_constraints
-- Every constraint of the schema's tables (but constraint triggers, which schema_triggers lists), by table, name.
SELECT c.conrelid::regclass::text AS table_name, c.conname AS name, pg_get_constraintdef(c.oid) AS definition
  FROM pg_constraint c
 WHERE c.connamespace = 'tidebase'::regnamespace AND c.conrelid <> 0 AND c.contype <> 't'  -- triggers: below
 ORDER BY c.conrelid::regclass::text COLLATE "C", c.conname COLLATE "C"

-- name: schema_indexes
-- Every index of the schema that no constraint owns, by table then name.
SELECT pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index i
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_class x ON x.oid = i.indexrelid
 WHERE t.relnamespace = 'tidebase'::regnamespace
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
 ORDER BY t.relname COLLATE "C", x.relname COLLATE "C"

-- name: schema_routines
-- Every function of the schema, by name then arguments.
SELECT pg_get_functiondef(p.oid) AS definition
  FROM pg_proc p
 WHERE p.pronamespace = 'tidebase'::regnamespace
 ORDER BY p.proname COLLATE "C", pg_get_function_identity_arguments(p.oid) COLLATE "C"

-- name: schema_triggers
-- Every trigger on the schema's tables (not the internal ones of foreign keys), by table then name.
SELECT pg_get_triggerdef(g.oid) AS definition
  FROM pg_trigger g
  JOIN pg_class t ON t.oid = g.tgrelid
 WHERE t.relnamespace = 'tidebase'::regnamespace AND NOT g.tgisinternal
 ORDER BY t.relname COLLATE "C", g.tgname COLLATE "C"
