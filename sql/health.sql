-- name: applied_migrations :many
-- Which yoyo migrations the database has, to compare with the files the service ships.
SELECT migration_id
FROM _yoyo_migration;

-- name: invalid_indexes :many
-- Indexes a failed CREATE INDEX CONCURRENTLY left invalid: queries silently stop using them.
SELECT c.relname AS index_name
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND n.nspname = current_schema();
