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

-- name: topic_exists :val
SELECT EXISTS (SELECT 1 FROM topics WHERE id = :topic_id);

-- name: list_topics :many
-- Topics by name after :after_name (keyset). A prefix arrives as the byte range
-- [prefix_from, prefix_to), which idx_topic_name_prefix (text_pattern_ops) scans directly;
-- no prefix: the range is everything ('' to NULL).
SELECT id, name, created_at
FROM topics
WHERE name > coalesce(:after_name::text, '')
  AND name ~>=~ :prefix_from::text
  AND (:prefix_to::text IS NULL OR name ~<~ :prefix_to::text)
ORDER BY name
LIMIT :limit OFFSET :offset;

-- name: count_topics :val
SELECT count(*)
FROM topics
WHERE name ~>=~ :prefix_from::text
  AND (:prefix_to::text IS NULL OR name ~<~ :prefix_to::text);

-- name: list_topic_messages :one
-- A topic's messages, newest first by id (ids grow with creation). The page of ids is cut from
-- the message_topics primary key (topic_id, message_id) first, walked backwards, and only those
-- messages are then fetched by primary key: a page costs its own size at any depth, and however
-- many newer messages carry other topics (a merge join along messages_pkey would walk them all).
-- One row, as messages.list_messages_newest_first: the items as JSON, more, the last id.
WITH page_ids AS (
    SELECT mt.message_id
    FROM message_topics AS mt
    WHERE mt.topic_id = :topic_id
      AND mt.message_id < coalesce(:before_id::bigint, 9223372036854775807)
    ORDER BY mt.message_id DESC
    LIMIT :limit::integer + 1 OFFSET :offset
),
page AS (
    SELECT m.id,
           json_build_object(/*columns*/'id', m.id, 'conversation_id', m.conversation_id, 'user_id', m.user_id,
               'role', m.role, 'content', m.content, 'timestamp', api_time(m."timestamp"),
               'edited_at', api_time(m.edited_at),
               'topics', (SELECT coalesce(json_agg(json_build_object('id', t.id, 'name', t.name) ORDER BY t.name), '[]'::json)
                          FROM message_topics AS tag JOIN topics AS t ON t.id = tag.topic_id
                          WHERE tag.message_id = m.id),
               'metadata', m.metadata, 'token_count', m.token_count,
               'token_count_estimated', m.token_count_estimated/*end columns*/) AS item
    FROM page_ids AS p
    CROSS JOIN LATERAL (
        SELECT id, conversation_id, user_id, role, content, "timestamp", edited_at, metadata, token_count,
               token_count_estimated
        FROM messages WHERE messages.id = p.message_id
    ) AS m
),
numbered AS (
    SELECT row_number() OVER (ORDER BY id DESC) AS n, id, item
    FROM page
)
SELECT convert_to(coalesce(json_agg(item ORDER BY n) FILTER (WHERE n <= :limit::integer), '[]')::text, 'UTF8') AS items,
       count(*) > :limit::integer AS more,
       max(id) FILTER (WHERE n = :limit::integer) AS last_id
FROM numbered;

-- name: count_topic_messages :val
SELECT count(*)
FROM message_topics
WHERE topic_id = :topic_id;

-- name: replace_message_topics :one
-- Sets a message's topics to exactly :topics (creating missing ones) and returns them; found is
-- false, and nothing is written, when the message does not exist.
WITH message AS (
    SELECT id FROM messages WHERE id = :message_id
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
SELECT EXISTS (SELECT 1 FROM message) AS found,
       (SELECT coalesce(json_agg(json_build_object('id', w.id, 'name', w.name) ORDER BY w.name), '[]'::json)
        FROM wanted AS w) AS topics;

-- name: add_message_topics :one
-- Adds :topics to a message (creating missing ones) and returns all of its topics; found is
-- false, and nothing is written, when the message does not exist.
WITH message AS (
    SELECT id FROM messages WHERE id = :message_id
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
),
every_topic AS (
    SELECT t.id, t.name
    FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
    WHERE mt.message_id = (SELECT id FROM message)
    UNION
    SELECT id, name FROM wanted
)
SELECT EXISTS (SELECT 1 FROM message) AS found,
       (SELECT coalesce(json_agg(json_build_object('id', e.id, 'name', e.name) ORDER BY e.name), '[]'::json)
        FROM every_topic AS e) AS topics;

-- name: remove_message_topic :val
DELETE FROM message_topics
WHERE message_id = :message_id AND topic_id = :topic_id
RETURNING message_id;

-- name: assign_topics :one
-- Tags every message of :message_ids with every topic of :topics in one statement. When any
-- message does not exist nothing is written and missing lists them.
WITH input AS (
    SELECT DISTINCT unnest(:message_ids::bigint[]) AS id
),
missing AS (
    SELECT i.id FROM input AS i
    WHERE NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.id = i.id)
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
