-- fragment: conversation_columns
-- The conversation object as the API shows it, in the order of the Conversation Struct.
c.id, c.user_id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata

-- name: create_conversation :one
-- A new conversation; a user_id with no user fails its foreign key (a 422).
INSERT INTO conversations AS c (user_id, title, metadata)
VALUES (:user_id, :title, :metadata::jsonb)
RETURNING /*include conversation_columns*/;

-- name: get_conversation :one
SELECT /*include conversation_columns*/
FROM conversations AS c
WHERE c.id = :conversation_id AND c.deleted_at IS NULL;

-- name: update_conversation :one
-- Sets the title when set_title (null clears it), and replaces metadata unless it is NULL.
UPDATE conversations AS c
SET title = CASE WHEN :set_title::boolean THEN :title::text ELSE c.title END,
    metadata = coalesce(:metadata::jsonb, c.metadata)
WHERE c.id = :conversation_id AND c.deleted_at IS NULL
RETURNING /*include conversation_columns*/;

-- name: delete_conversation :val
-- Marks a live conversation deleted; migration 0023's trigger marks its live messages deleted
-- with it (so a restore brings back exactly those) in a statement of its own, which sees every
-- message committed while this one waited for the conversation's row lock.
UPDATE conversations
SET deleted_at = now()
WHERE id = :conversation_id AND deleted_at IS NULL
RETURNING id;

-- name: lock_conversation :val
-- The first statement of a restore (of the conversation, or of one of its messages: see
-- messages.lock_conversation_of_message): its row locked, as deleting it or one of its messages
-- locks it, so none of those commits until the restore's transaction ends. On its own, so the
-- statements after it take their snapshots (READ COMMITTED) once the lock is granted and see
-- every delete committed before: one statement that locked and then restored or read saw the
-- rows as they were before it waited, missed such a delete, and answered a 404 for a deleted,
-- restorable row. The conversation's id; none when it does not exist.
SELECT c.id FROM conversations AS c WHERE c.id = :conversation_id FOR NO KEY UPDATE;

-- name: restore_conversation :val
-- Brings a deleted conversation back, with the messages deleted with it (by trigger; not those
-- deleted before it). No row when it does not exist or is not deleted. After lock_conversation.
UPDATE conversations
SET deleted_at = NULL
WHERE id = :conversation_id AND deleted_at IS NOT NULL
RETURNING id;

-- name: list_user_conversations :many
-- A user's conversations, most recently active first: keyset after (before_updated_at, before_id)
-- when a cursor is given, else from the top (NULLs become +infinity so the plan has one shape),
-- skipping :offset rows for offset pages; limit + 1 rows, the extra one says more follow. Served
-- in order by idx_conversation_live_user_updated (live conversations only). The user's marker comes
-- first (as a conversation's in messages.list_messages_newest_first): one row of NULLs when the
-- user exists, none when it does not.
SELECT /*include conversation_columns*/
FROM (
    (SELECT /*include conversation_columns*/
     FROM conversations AS c
     WHERE c.user_id = :user_id
       AND c.deleted_at IS NULL
       AND c.updated_at <= coalesce(:before_updated_at::timestamptz, 'infinity')
       AND (c.updated_at, c.id) < (coalesce(:before_updated_at::timestamptz, 'infinity'),
                                   coalesce(:before_id::bigint, 9223372036854775807))
     ORDER BY c.updated_at DESC, c.id DESC
     LIMIT :limit::integer + 1 OFFSET :offset)
    UNION ALL
    SELECT /*include conversation_columns*/
    FROM users AS u
    LEFT JOIN conversations AS c ON false
    WHERE u.id = :user_id
) AS c
ORDER BY c.updated_at DESC, c.id DESC;

-- name: count_user_conversations :val
SELECT count(*)
FROM conversations
WHERE user_id = :user_id AND deleted_at IS NULL;
