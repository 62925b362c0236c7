-- name: begin_adding_messages :one
-- The first statement of adding messages (one or a batch of up to 1,000: service/messages.py's
-- add_messages, in a transaction whose second and last statement writes the new messages and their
-- tags, insert_new_messages). One round trip:
-- it locks the conversation's row (as deleting it does, so a message never lands in a conversation
-- being deleted), creates the topics the new messages name, and reads what the service needs to
-- answer every item without reading a row back:
--   owner           the conversation's owner; NULL when it does not exist or is deleted;
--   now             the transaction's timestamp, which the "timestamp" column defaults to;
--   unknown_users   those of :user_ids (distinct) that name no user;
--   stored_keys     those of :client_msg_ids (distinct) stored in the conversation already, and
--   stored_deleted  whether each one's message is deleted;
--   ids             the new messages' ids, ascending, drawn from the table's own sequence in one go
--                   (so they follow item order): :fresh (the items that are not repeats within the
--                   batch) less the stored keys; none when the conversation is missing;
--   topic_ids, topic_names  the topics (created now if missing: topic_ids, migration 0004) of the
--                   (:topic_names, :topic_keys) pairs whose item's client_msg_id (topic_keys) is
--                   NULL or not stored: a duplicate creates nothing. Created before the messages,
--                   so the change feed lists a new topic before the messages that carry it;
--   metadata        :metadata as PostgreSQL stores it (jsonb orders keys and normalises numbers),
--                   so the answer shows what a read of the message will;
--   tagging         whether the new messages have topics: the transaction-local setting
--                   freya.tags_of_new_messages ('copied') then tells the triggers on the tags
--                   insert_new_messages writes that they are all on new messages (migration 0029)
--                   whose rows carry their copy of them (migration 0030).
-- A client_msg_id committed by a concurrent request while this statement waited for the lock is
-- not in its snapshot: insert_new_messages then fails on idx_message_client_msg_id, and the caller runs the
-- transaction again (this statement then sees the winner's message, a duplicate). When the caller
-- refuses the items (an unknown user, a deleted duplicate, no conversation), its transaction rolls
-- back, topics included.
WITH conversation AS (
    SELECT c.id, c.user_id FROM conversations AS c
    WHERE c.id = :conversation_id AND c.deleted_at IS NULL
    FOR NO KEY UPDATE
),
stored AS (
    SELECT m.client_msg_id, m.deleted_at IS NOT NULL AS deleted
    FROM messages AS m
    WHERE m.conversation_id = :conversation_id AND m.client_msg_id = ANY (:client_msg_ids::text[])
),
topic AS (
    SELECT t.id, t.name
    FROM topic_ids(ARRAY(
        SELECT DISTINCT w.name
        FROM unnest(:topic_names::text[], :topic_keys::text[]) AS w (name, client_msg_id)
        WHERE EXISTS (SELECT 1 FROM conversation)
          AND (w.client_msg_id IS NULL OR w.client_msg_id NOT IN (SELECT s.client_msg_id FROM stored AS s))
    )) AS t
)
SELECT (SELECT c.user_id FROM conversation AS c) AS owner,
       now() AS now,
       ARRAY(SELECT u.id FROM unnest(:user_ids::bigint[]) AS u (id)
             WHERE NOT EXISTS (SELECT 1 FROM users AS x WHERE x.id = u.id)) AS unknown_users,
       ARRAY(SELECT s.client_msg_id FROM stored AS s ORDER BY s.client_msg_id) AS stored_keys,
       ARRAY(SELECT s.deleted FROM stored AS s ORDER BY s.client_msg_id) AS stored_deleted,
       ARRAY(SELECT n.id
             FROM (SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id
                   FROM generate_series(1, :fresh::integer - (SELECT count(*)::integer FROM stored))
                   WHERE EXISTS (SELECT 1 FROM conversation)) AS n
             ORDER BY n.id) AS ids,
       ARRAY(SELECT tp.id FROM topic AS tp ORDER BY tp.name) AS topic_ids,
       ARRAY(SELECT tp.name FROM topic AS tp ORDER BY tp.name) AS topic_names,
       :metadata::jsonb[] AS metadata,
       set_config('freya.tags_of_new_messages', CASE WHEN EXISTS (SELECT 1 FROM topic) THEN 'copied' ELSE '' END, true)
           = 'copied' AS tagging;

-- name: insert_new_messages :exec
-- add_messages' write, after begin_adding_messages: the new messages (ids drawn by it, in item
-- order) and their tags, (topic_ids[i], message_ids[i]) pairs, in one statement. search is
-- computed here, so the row trigger of migration 0014 skips these rows; token_count is always
-- given, so that of migration message_metadata_columns does too; "timestamp" is the transaction's
-- now(); each row carries its topic ids (migration 0030), whose trigger begin_adding_messages' flag
-- tells to skip these tags. The tags' foreign keys are checked at the end of the statement, when
-- the messages exist. (Measured against binary COPY of the same rows, messages then tags: the same
-- time for 1,000 messages, a quarter less for one, and a round trip fewer.)
WITH tag AS (
    SELECT t.topic_id, t.message_id
    FROM unnest(:topic_ids::bigint[], :message_ids::bigint[]) AS t (topic_id, message_id)
),
message AS (
    INSERT INTO messages (id, conversation_id, user_id, role, content, client_msg_id, search, metadata, token_count,
                          token_count_estimated, topic_ids)
    OVERRIDING SYSTEM VALUE
    SELECT m.id, :conversation_id, m.user_id, m.role, m.content, m.client_msg_id, search_vector(m.content), m.metadata,
           m.token_count, m.token_count_estimated, g.topic_ids
    FROM unnest(:ids::bigint[], :user_ids::bigint[], :roles::text[], :contents::text[], :client_msg_ids::text[],
                :metadata::jsonb[], :token_counts::integer[], :token_counts_estimated::boolean[])
        AS m (id, user_id, role, content, client_msg_id, metadata, token_count, token_count_estimated)
    LEFT JOIN (
        SELECT g.message_id, array_agg(g.topic_id ORDER BY g.topic_id) AS topic_ids
        FROM tag AS g
        GROUP BY g.message_id
    ) AS g ON g.message_id = m.id
)
INSERT INTO message_topics (topic_id, message_id)
SELECT t.topic_id, t.message_id
FROM tag AS t;

-- fragment: message_columns
-- The message object as the API shows it, in the order of the Message Struct; its topics come
-- from its topic_ids (migration 0030). fields= projects this list.
/*columns*/m.id AS id, m.conversation_id AS conversation_id, m.user_id AS user_id, m.role AS role,
       m.content AS content, m."timestamp" AS "timestamp", m.edited_at AS edited_at, m.metadata AS metadata,
       m.token_count AS token_count, m.token_count_estimated AS token_count_estimated/*end columns*/

-- fragment: message_fields
-- The columns of message_columns, as a statement's inner page selects them from messages, and
-- the message's topic ids (migration 0030).
m.id, m.conversation_id, m.user_id, m.role, m.content, m."timestamp", m.edited_at, m.metadata, m.token_count,
       m.token_count_estimated, m.topic_ids

-- fragment: live_messages
-- A conversation's live messages with an optional role (NULL: any).
m.conversation_id = :conversation_id
          AND m.deleted_at IS NULL
          AND (:role::text IS NULL OR m.role = :role::text)

-- fragment: page_filters
-- live_messages in [since, until); NULLs mean "no bound". Pages walking idx_message_live_timestamp
-- take only the bound they stop at from here: on the side they start from, PostgreSQL starts the
-- scan at the first plain "timestamp" bound it finds, and with until there besides the cursor it
-- started at until and tested every index entry from there to the cursor (a page 200,000 deep
-- read 990 index pages instead of 4). So that side has one bound, the keyset's, written twice: as
-- the row comparison and as a plain bound on "timestamp" (which the generic plan needs to prefer
-- idx_message_live_timestamp).
/*include live_messages*/
          AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
          AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')

-- fragment: page_rows
-- What a page statement returns of its CTE "page": the message's columns, the sort key (sort_ts,
-- sort_id) its cursors are made of, and the message's topic ids (message_fields). sort_ts is a
-- marked part: a projection that selects "timestamp" leaves it out (decoding a time twice is a
-- fifth of what the rows cost the client); so is topic_ids, which fields= can leave out. The
-- part window is what the context window sums and skips by, whatever fields= selects; pages
-- leave it out.
SELECT /*include message_columns*/, /*part sort_ts*/m."timestamp" AS sort_ts, /*end part*/m.id AS sort_id/*part topics*/, m.topic_ids/*end part*//*part window*/,
       m.token_count AS window_tokens, m.role AS window_role/*end part*/
FROM page AS m

-- fragment: conversation_marker
-- A page statement's other half (UNION ALL with its page): one row of NULLs when the conversation
-- is live, so one statement answers both "which rows" and "does it exist" (service/pages.py's
-- rows_under_parent): no row at all means no such conversation. Its NULL sort key puts it first
-- in a descending page and last in an ascending one, so the statement's ORDER BY merges the two
-- halves (a Merge Append) instead of sorting the page again, as it did when the conversation was
-- the outer side of a join to the page (BENCHMARKS.md: it matters for long pages, such as a
-- context window's 182 rows).
-- The page half does not read the conversation: a live message's conversation is live (deleting
-- a conversation deletes its messages).
SELECT /*include message_fields*/
FROM conversations AS c
LEFT JOIN messages AS m ON false
WHERE c.id = :conversation_id AND c.deleted_at IS NULL

-- name: get_messages_by_client_ids :many
-- The stored messages of a conversation with these client_msg_ids (the duplicates a post repeats),
-- and whether each is deleted.
SELECT m.client_msg_id, m.deleted_at IS NOT NULL AS deleted, /*include message_columns*/
FROM messages AS m
WHERE m.conversation_id = :conversation_id
  AND m.client_msg_id = ANY (:client_msg_ids::text[]);

-- name: get_message :many
-- The message and its topic ids (migration 0030; names come from topics.topic_names); none, or
-- none without topics, as fields= asks.
SELECT /*include message_columns*//*part topics*/, m.topic_ids/*end part*/
FROM messages AS m
WHERE m.id = :message_id AND m.deleted_at IS NULL;

-- name: list_messages_newest_first :many
-- A page of a conversation, newest first, from the keyset position (before_ts, before_id) when a
-- cursor is given, else from until (exclusive: (until, 0) comes before every id of that instant),
-- else from the newest message: one row comparison, so the scan of idx_message_live_timestamp
-- (conversation_id, timestamp, id) of live messages starts there, not at the newest message, and
-- deleted messages are not in its way. A cursor's position is inside the filters it was made with.
-- since is inclusive; role filters. limit + 1 rows: the extra one says another
-- page follows. Each row ends with the sort key (sort_ts, sort_id) the next cursor is made of,
-- then the message's topic ids, left out when fields= leaves topics out. The conversation's
-- marker (conversation_marker) comes first.
WITH page AS (
    (SELECT /*include message_fields*/
     FROM messages AS m
     WHERE /*include live_messages*/
       AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
       AND m."timestamp" <= coalesce(:before_ts::timestamptz, :until::timestamptz, 'infinity')
       AND (m."timestamp", m.id) < (coalesce(:before_ts::timestamptz, :until::timestamptz, 'infinity'),
                                    coalesce(:before_id::bigint,
                                             CASE WHEN :until::timestamptz IS NULL THEN 9223372036854775807 END, 0))
     ORDER BY m."timestamp" DESC, m.id DESC
     LIMIT :limit::integer + 1 OFFSET :offset)
    UNION ALL
    /*include conversation_marker*/
)
/*include page_rows*/
ORDER BY m."timestamp" DESC, m.id DESC;

-- name: list_messages_oldest_first :many
-- The same page walked the other way, oldest first: from (after_ts, after_id), else from since
-- (inclusive: (since, 0) comes before every id of that instant), up to until. The conversation's
-- marker comes last.
WITH page AS (
    (SELECT /*include message_fields*/
     FROM messages AS m
     WHERE /*include live_messages*/
       AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')
       AND m."timestamp" >= coalesce(:after_ts::timestamptz, :since::timestamptz, '-infinity')
       AND (m."timestamp", m.id) > (coalesce(:after_ts::timestamptz, :since::timestamptz, '-infinity'),
                                    coalesce(:after_id::bigint, 0))
     ORDER BY m."timestamp", m.id
     LIMIT :limit::integer + 1 OFFSET :offset)
    UNION ALL
    /*include conversation_marker*/
)
/*include page_rows*/
ORDER BY m."timestamp", m.id;

-- name: list_messages_around :many
-- The messages around :around (an anchored page): the anchor (side 0), up to :older_rows messages
-- just older (side -1, newest first) and up to :newer_rows just newer (side 1, oldest first), in
-- the page's filters: about half a page each, plus one that says whether more follow, so the
-- statement reads the rows of one page, not of two (the caller reads on where one side runs short).
-- Each side is a keyset range of idx_message_live_timestamp starting at the anchor, like a list
-- page, and stopping at since or until (a listed anchor is inside them).
-- Rows: the message's columns, the sort key (sort_ts a part, as in page_rows), its topic ids (a
-- part, as in page_rows, at the same place: a page read on from a side joins these rows), the
-- side, and listed (the anchor passes the filters).
-- No row: the message is not a live message of this conversation. The conversation is not read:
-- a live message's conversation is live (deleting a conversation deletes its messages), and only
-- the caller's 404 needs to know which of the two is missing.
SELECT /*include message_columns*/, /*part sort_ts*/m."timestamp" AS sort_ts, /*end part*/m.id AS sort_id/*part topics*/,
       m.topic_ids/*end part*/, m.side, a.listed
FROM (
    SELECT /*include message_fields*/, (/*include page_filters*/) AS listed
    FROM messages AS m
    WHERE m.id = :around AND m.conversation_id = :conversation_id AND m.deleted_at IS NULL
) AS a
CROSS JOIN LATERAL (
    -- The anchor as found above (not fetched again).
    SELECT 0 AS side, /*include message_fields*/
    FROM (SELECT a.*) AS m
    UNION ALL
    (SELECT -1, /*include message_fields*/
     FROM messages AS m
     WHERE /*include live_messages*/
       AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
       AND m."timestamp" <= a."timestamp"
       AND (m."timestamp", m.id) < (a."timestamp", a.id)
     ORDER BY m."timestamp" DESC, m.id DESC
     LIMIT :older_rows)
    UNION ALL
    (SELECT 1, /*include message_fields*/
     FROM messages AS m
     WHERE /*include live_messages*/
       AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')
       AND m."timestamp" >= a."timestamp"
       AND (m."timestamp", m.id) > (a."timestamp", a.id)
     ORDER BY m."timestamp", m.id
     LIMIT :newer_rows)
) AS m
ORDER BY m."timestamp", m.id;

-- name: list_topic_messages :many
-- A topic's messages, newest first by id (ids grow with creation). The page of ids is cut from
-- the message_topics primary key (topic_id, message_id) first, walked backwards, and only those
-- messages are then fetched by primary key: a page costs its own size at any depth, and however
-- many newer messages carry other topics (a merge join along messages_pkey would walk them all).
-- The topic's marker comes first, as a conversation's does in list_messages_newest_first: one row
-- of NULLs when the topic exists, none when it does not.
SELECT /*include message_columns*/, m.id AS sort_id/*part topics*/, m.topic_ids/*end part*/
FROM (
    (SELECT /*include message_fields*/
     FROM (SELECT mt.message_id
           FROM message_topics AS mt
           WHERE mt.topic_id = :topic_id
             AND mt.message_id < coalesce(:before_id::bigint, 9223372036854775807)
           ORDER BY mt.message_id DESC
           LIMIT :limit::integer + 1 OFFSET :offset) AS page
     JOIN messages AS m ON m.id = page.message_id
     ORDER BY m.id DESC)
    UNION ALL
    SELECT /*include message_fields*/
    FROM topics AS t
    LEFT JOIN messages AS m ON false
    WHERE t.id = :topic_id
) AS m
ORDER BY m.id DESC;

-- name: count_topic_messages :val
SELECT count(*)
FROM message_topics
WHERE topic_id = :topic_id;

-- name: count_messages :val
SELECT count(*)
FROM messages AS m
WHERE /*include page_filters*/;

-- name: update_message :many
-- Changes content, role, metadata and the token count (NULL keeps the stored value) and stamps
-- edited_at. The caller sends the count with its flag: the writer's, or the estimate of new content.
-- The trigger of migration 0023 keeps the replaced role and content as a revision. Returns the
-- message's columns and its topic ids.
UPDATE messages AS m
SET content = coalesce(:content::text, m.content),
    role = coalesce(:role::text, m.role),
    metadata = coalesce(:metadata::jsonb, m.metadata),
    token_count = coalesce(:token_count::integer, m.token_count),
    token_count_estimated = coalesce(:token_count_estimated::boolean, m.token_count_estimated),
    edited_at = now()
WHERE m.id = :message_id AND m.deleted_at IS NULL
RETURNING /*include message_columns*/, m.topic_ids;

-- name: update_messages :one
-- Bulk edit in one statement: each id gets its content, role, metadata and token count (NULL
-- keeps the value). If any id does not exist (or is
-- deleted) nothing is written and missing lists them.
-- Revisions are kept by migration 0023's statement trigger: still one statement.
WITH input AS (
    SELECT u.id, u.content, u.role, u.metadata, u.token_count, u.token_count_estimated
    FROM unnest(:ids::bigint[], :contents::text[], :roles::text[], :metadata::jsonb[], :token_counts::integer[],
                :token_counts_estimated::boolean[])
        AS u (id, content, role, metadata, token_count, token_count_estimated)
),
live AS (
    -- Locked in id order (as assign_topics locks them), before the UPDATE (whose filter reads
    -- missing first): two bulk edits listing the same messages in different orders queue
    -- instead of deadlocking. The lock rechecks deleted_at on the newest version.
    SELECT m.id FROM messages AS m
    WHERE m.id IN (SELECT id FROM input) AND m.deleted_at IS NULL
    ORDER BY m.id
    FOR NO KEY UPDATE
),
missing AS (
    SELECT i.id FROM input AS i WHERE i.id NOT IN (SELECT l.id FROM live AS l)
),
updated AS (
    UPDATE messages AS m
    SET content = coalesce(i.content, m.content),
        role = coalesce(i.role, m.role),
        metadata = coalesce(i.metadata, m.metadata),
        token_count = coalesce(i.token_count, m.token_count),
        token_count_estimated = coalesce(i.token_count_estimated, m.token_count_estimated),
        edited_at = now()
    FROM input AS i
    WHERE m.id = i.id
      AND NOT EXISTS (SELECT 1 FROM missing)
    RETURNING m.id
)
SELECT (SELECT count(*) FROM updated) AS updated,
       coalesce((SELECT array_agg(id ORDER BY id) FROM missing), '{}') AS missing;

-- name: delete_message :val
-- Marks a live message deleted; migration 0023's trigger sets its tags aside and moves the
-- conversation's message_count. The conversation's row is locked first, in the order a
-- conversation's delete takes them (conversation, then messages), so the two cannot deadlock.
WITH conversation AS (
    SELECT c.id FROM conversations AS c
    WHERE c.id = (SELECT m.conversation_id FROM messages AS m WHERE m.id = :message_id)
    FOR NO KEY UPDATE
)
UPDATE messages AS m
SET deleted_at = now()
FROM conversation AS c
WHERE m.id = :message_id AND m.conversation_id = c.id AND m.deleted_at IS NULL
RETURNING m.id;

-- name: lock_conversation_of_message :val
-- The first statement of restoring a message: conversations.lock_conversation for the message's
-- conversation (its id; none when the message does not exist).
SELECT c.id FROM conversations AS c
WHERE c.id = (SELECT m.conversation_id FROM messages AS m WHERE m.id = :message_id)
FOR NO KEY UPDATE;

-- name: restore_message :one
-- Brings a deleted message back, tags included (by trigger). conversation_deleted: its
-- conversation is deleted, so it stays deleted (a 409); restored: it was deleted and is live again.
-- The conversation's row is locked first and its deleted_at read from the latest version, so a
-- concurrent delete of the conversation cannot miss the restored message.
WITH target AS (
    SELECT m.id, m.conversation_id FROM messages AS m WHERE m.id = :message_id
),
conversation AS (
    SELECT c.id, c.deleted_at FROM conversations AS c
    WHERE c.id = (SELECT t.conversation_id FROM target AS t)
    FOR NO KEY UPDATE
),
restored AS (
    UPDATE messages AS m
    SET deleted_at = NULL, deleted_with_conversation = false
    FROM conversation AS c
    WHERE m.id = :message_id AND m.conversation_id = c.id AND c.deleted_at IS NULL AND m.deleted_at IS NOT NULL
    RETURNING m.id
)
SELECT coalesce((SELECT c.deleted_at IS NOT NULL FROM conversation AS c), false) AS conversation_deleted,
       EXISTS (SELECT 1 FROM restored) AS restored;
