-- name: mark_purging :val
-- Tells the delete triggers of migration 0023 that this transaction purges (the feed says purged,
-- not erased). Transaction-local: it ends with the batch.
SELECT set_config('freya.purging', 'on', true);

-- name: purge_messages :one
-- Removes for good up to :batch messages deleted more than :older_than ago, oldest deletion first (found by
-- idx_message_deleted_at), with their revisions and set-aside tags (by cascade; counted here).
-- SKIP LOCKED: a message being restored right now is left for the next run, never waited on.
WITH doomed AS (
    SELECT m.id
    FROM messages AS m
    WHERE m.deleted_at < now() - :older_than::interval
    ORDER BY m.deleted_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
),
removed AS (
    DELETE FROM messages AS m
    USING doomed AS d
    WHERE m.id = d.id
    RETURNING m.id
)
SELECT (SELECT count(*) FROM removed) AS messages,
       (SELECT count(*) FROM message_revisions AS r WHERE r.message_id IN (SELECT id FROM doomed)) AS revisions,
       (SELECT count(*) FROM deleted_message_topics AS t WHERE t.message_id IN (SELECT id FROM doomed)) AS tags;

-- name: purge_conversations :val
-- Removes for good up to :batch conversations deleted more than :older_than ago whose messages purge_messages
-- has removed already (they were deleted with it or before, so they are due too): the cascade
-- then deletes nothing, and a batch stays small however long the conversation was.
WITH doomed AS (
    SELECT c.id
    FROM conversations AS c
    WHERE c.deleted_at < now() - :older_than::interval
      AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.conversation_id = c.id)
    ORDER BY c.deleted_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
),
removed AS (
    DELETE FROM conversations AS c
    USING doomed AS d
    WHERE c.id = d.id
    RETURNING c.id
)
SELECT count(*) FROM removed;
