-- name: create_topic :one
-- A new topic; an existing name violates idx_topic_name (a 409).
INSERT INTO topics (name)
VALUES (:name)
RETURNING id, name, created_at;

-- name: get_topic :one
-- message_count reads the message_topics primary key (topic_id, message_id): an index-only count.
SELECT t.id, t.name, t.created_at,
       (SELECT count(*) FROM message_topics AS mt WHERE mt.topic_id = t.id) AS message_count
FROM topics AS t
WHERE t.id = :topic_id;

-- name: list_topics :many
-- Topics by name after :after_name (keyset); limit + 1 rows, the extra one says more follow. A prefix arrives as the byte range
-- [prefix_from, prefix_to), which idx_topic_name_prefix (text_pattern_ops) scans directly;
-- no prefix: the range is everything ('' to NULL).
SELECT id, name, created_at
FROM topics
WHERE name > coalesce(:after_name::text, '')
  AND name ~>=~ :prefix_from::text
  AND (:prefix_to::text IS NULL OR name ~<~ :prefix_to::text)
ORDER BY name
LIMIT :limit::integer + 1 OFFSET :offset;

-- name: count_topics :val
SELECT count(*)
FROM topics
WHERE name ~>=~ :prefix_from::text
  AND (:prefix_to::text IS NULL OR name ~<~ :prefix_to::text);

-- name: tags_of_messages :many
-- The topic ids of these messages (ascending, as messages.topic_ids holds them), for rows that do
-- not carry that copy (a post's replayed duplicates, a tagging's answer): an index-only scan of
-- idx_message_topic (message_id, topic_id). A message without topics has no row. Names come from
-- topic_names, which each process asks only for ids it has not seen (a topic is never renamed or
-- deleted).
SELECT mt.message_id, array_agg(mt.topic_id ORDER BY mt.topic_id) AS topic_ids
FROM message_topics AS mt
WHERE mt.message_id = ANY (:message_ids::bigint[])
GROUP BY mt.message_id;

-- name: topic_names :many
SELECT id, name
FROM topics
WHERE id = ANY (:topic_ids::bigint[]);

-- name: lock_message_for_tagging :val
-- The first statement of replacing a message's tags (service/topics.py): true when the message
-- is live, now locked as replace_message_topics locks it. On its own, so that the replacement's
-- snapshot (READ COMMITTED: one per statement) is taken after the lock is granted: it then sees
-- the tags of every tagging that held the lock before. In one statement the DELETE read the tags
-- as they were when it started, before it waited, and two concurrent replacements left the union
-- of both sets.
SELECT true FROM messages WHERE id = :message_id AND deleted_at IS NULL FOR NO KEY UPDATE;

-- name: replace_message_topics :val
-- Sets a message's topics to exactly :topics (creating missing ones); false, and nothing is
-- written, when the message does not exist. Run after lock_message_for_tagging, in its transaction.
WITH message AS (
    -- A concurrent delete (which sets tags aside) waits for this tagging, or this tagging sees
    -- the message deleted. FOR NO KEY UPDATE, the lock the trigger of migration 0030 takes to
    -- copy the tags onto the row: two taggings of a message queue here instead of deadlocking
    -- as they upgrade a shared lock.
    SELECT id FROM messages WHERE id = :message_id AND deleted_at IS NULL FOR NO KEY UPDATE
),
wanted AS (
    SELECT id, name
    FROM topic_ids((SELECT CASE WHEN EXISTS (SELECT 1 FROM message) THEN :topics::text[] ELSE '{}' END))
),
removed AS (
    DELETE FROM message_topics AS mt
    WHERE mt.message_id = (SELECT id FROM message)
      AND mt.topic_id NOT IN (SELECT id FROM wanted)
    RETURNING mt.topic_id
),
added AS (
    INSERT INTO message_topics (topic_id, message_id)
    SELECT w.id, m.id FROM wanted AS w CROSS JOIN message AS m
    ON CONFLICT DO NOTHING
    RETURNING topic_id
)
SELECT EXISTS (SELECT 1 FROM message);

-- name: add_message_topics :val
-- Adds :topics to a message (creating missing ones); false, and nothing is written, when the
-- message does not exist.
WITH message AS (
    -- A concurrent delete (which sets tags aside) waits for this tagging, or this tagging sees
    -- the message deleted. FOR NO KEY UPDATE, the lock the trigger of migration 0030 takes to
    -- copy the tags onto the row: two taggings of a message queue here instead of deadlocking
    -- as they upgrade a shared lock.
    SELECT id FROM messages WHERE id = :message_id AND deleted_at IS NULL FOR NO KEY UPDATE
),
wanted AS (
    SELECT id, name
    FROM topic_ids((SELECT CASE WHEN EXISTS (SELECT 1 FROM message) THEN :topics::text[] ELSE '{}' END))
),
added AS (
    INSERT INTO message_topics (topic_id, message_id)
    SELECT w.id, m.id FROM wanted AS w CROSS JOIN message AS m
    ON CONFLICT DO NOTHING
    RETURNING topic_id
)
SELECT EXISTS (SELECT 1 FROM message);

-- name: remove_message_topic :val
-- The message is locked first, as every tagging statement locks it before its tags (and the
-- trigger of migration 0030 would lock it after): a removal and an assignment of the same tag
-- queue instead of deadlocking.
WITH message AS (
    SELECT id FROM messages WHERE id = :message_id FOR NO KEY UPDATE
)
DELETE FROM message_topics
WHERE message_id = (SELECT id FROM message) AND topic_id = :topic_id
RETURNING message_id;

-- name: assign_topics :one
-- Tags every message of :message_ids with every topic of :topics in one statement. When any
-- message does not exist nothing is written and missing lists them.
WITH input AS (
    SELECT DISTINCT unnest(:message_ids::bigint[]) AS id
),
live AS (
    -- Locked as in add_message_topics, in id order (as the trigger locks them): two
    -- assignments to overlapping messages queue instead of deadlocking.
    SELECT m.id FROM messages AS m
    WHERE m.id IN (SELECT id FROM input) AND m.deleted_at IS NULL
    ORDER BY m.id
    FOR NO KEY UPDATE
),
missing AS (
    SELECT i.id FROM input AS i
    WHERE i.id NOT IN (SELECT id FROM live)
),
wanted AS (
    SELECT id, name
    FROM topic_ids((SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM missing) THEN :topics::text[] ELSE '{}' END))
),
assigned AS (
    INSERT INTO message_topics (topic_id, message_id)
    SELECT w.id, i.id FROM wanted AS w CROSS JOIN input AS i
    WHERE NOT EXISTS (SELECT 1 FROM missing)
    ON CONFLICT DO NOTHING
    RETURNING message_id
)
SELECT (SELECT count(*) FROM assigned) AS assigned,
       coalesce((SELECT array_agg(id ORDER BY id) FROM missing), '{}') AS missing;
