-- name: primary_position :val
-- The primary's WAL insert position. Read after a commit it is at or past the commit record (the
-- write position can trail the record when synchronous_commit is off). Text such as 16/B374D848.
SELECT pg_current_wal_insert_lsn()::text;

-- name: replay_position :one
-- Where a standby stands: in_recovery is false on a server that is not (or no longer) a standby.
SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn()::text AS replayed;
