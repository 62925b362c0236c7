-- name: table_stats :many
-- Per table: rows, dead rows, size on disk (with indexes and TOAST), and when it was last
-- vacuumed and analysed, by hand or by autovacuum.
SELECT s.relname AS table_name,
       s.n_live_tup AS live_rows,
       s.n_dead_tup AS dead_rows,
       pg_total_relation_size(s.relid) AS total_bytes,
       pg_relation_size(s.relid) AS table_bytes,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       s.n_mod_since_analyze AS changed_since_analyze
FROM pg_stat_user_tables AS s
WHERE s.schemaname = current_schema()
  AND s.relname !~ '^_?yoyo'
ORDER BY s.relname;

-- name: index_stats :many
-- Per index: size and scans since statistics were reset. unused: never scanned, and not there
-- to enforce uniqueness. redundant_with: another index of the same table whose leading columns
-- (with the same operator classes) start with all of this one's, so it could answer the same
-- lookups; reported, never dropped (the database guide's idx_message_conversation_id is a prefix
-- of idx_message_timestamp, for example). Array slices are written [0 : n] with spaces, since
-- :name is a parameter.
SELECT s.relname AS table_name,
       s.indexrelname AS index_name,
       pg_relation_size(s.indexrelid) AS bytes,
       s.idx_scan AS scans,
       i.indisunique AS is_unique,
       i.indisvalid AS is_valid,
       (s.idx_scan = 0 AND NOT i.indisunique) AS unused,
       (SELECT o.relname
        FROM pg_index AS other
        JOIN pg_class AS o ON o.oid = other.indexrelid
        WHERE other.indrelid = i.indrelid
          AND other.indexrelid <> i.indexrelid
          AND NOT i.indisunique
          AND i.indexprs IS NULL AND other.indexprs IS NULL
          AND i.indpred IS NULL AND other.indpred IS NULL
          AND other.indnkeyatts > i.indnkeyatts
          AND (other.indkey::int2[])[0 : i.indnkeyatts - 1] = (i.indkey::int2[])[0 : i.indnkeyatts - 1]
          AND (other.indclass::oid[])[0 : i.indnkeyatts - 1] = (i.indclass::oid[])[0 : i.indnkeyatts - 1]
        ORDER BY o.relname
        LIMIT 1) AS redundant_with
FROM pg_stat_user_indexes AS s
JOIN pg_index AS i ON i.indexrelid = s.indexrelid
WHERE s.schemaname = current_schema()
  AND s.relname !~ '^_?yoyo'
ORDER BY s.relname, s.indexrelname;

-- name: analyze_users :exec
ANALYZE users;

-- name: analyze_conversations :exec
ANALYZE conversations;

-- name: analyze_messages :exec
ANALYZE messages;

-- name: analyze_topics :exec
ANALYZE topics;

-- name: analyze_message_topics :exec
ANALYZE message_topics;

-- name: vacuum_users :exec
VACUUM users;

-- name: vacuum_conversations :exec
VACUUM conversations;

-- name: vacuum_messages :exec
VACUUM messages;

-- name: vacuum_topics :exec
VACUUM topics;

-- name: vacuum_message_topics :exec
VACUUM message_topics;

-- name: vacuum_analyze_users :exec
VACUUM (ANALYZE) users;

-- name: vacuum_analyze_conversations :exec
VACUUM (ANALYZE) conversations;

-- name: vacuum_analyze_messages :exec
VACUUM (ANALYZE) messages;

-- name: vacuum_analyze_topics :exec
VACUUM (ANALYZE) topics;

-- name: vacuum_analyze_message_topics :exec
VACUUM (ANALYZE) message_topics;
