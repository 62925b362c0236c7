-- name: create_conversation :one
-- A new conversation; a user_id with no user fails its foreign key (a 422).
INSERT INTO conversations (user_id, title, metadata)
VALUES (:user_id, :title, :metadata::jsonb)
RETURNING id, user_id, title, created_at, updated_at, message_count, metadata;

-- name: get_conversation :one
SELECT id, user_id, title, created_at, updated_at, message_count, metadata
FROM conversations
WHERE id = :conversation_id;

-- name: update_conversation :one
-- Sets the title when set_title (null clears it), and replaces metadata unless it is NULL.
UPDATE conversations
SET title = CASE WHEN :set_title::boolean THEN :title::text ELSE title END,
    metadata = coalesce(:metadata::jsonb, metadata)
WHERE id = :conversation_id
RETURNING id, user_id, title, created_at, updated_at, message_count, metadata;

-- name: delete_conversation :val
-- Cascades to its messages and their tags.
DELETE FROM conversations
WHERE id = :conversation_id
RETURNING id;

-- name: list_user_conversations :many
-- A user's conversations, most recently active first: keyset after (before_updated_at, before_id)
-- when a cursor is given, else from the top (NULLs become +infinity so the plan has one shape),
-- skipping :offset rows for offset pages; limit + 1 rows, the extra one says more follow. Served
-- in order by idx_conversation_user_updated. The user is the outer side of the join: no row at
-- all means no such user, one row of NULLs an empty page.
SELECT c.id, c.user_id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM users AS u
LEFT JOIN LATERAL (
    SELECT id, user_id, title, created_at, updated_at, message_count, metadata
    FROM conversations
    WHERE user_id = :user_id
      AND updated_at <= coalesce(:before_updated_at::timestamptz, 'infinity')
      AND (updated_at, id) < (coalesce(:before_updated_at::timestamptz, 'infinity'),
                              coalesce(:before_id::bigint, 9223372036854775807))
    ORDER BY updated_at DESC, id DESC
    LIMIT :limit::integer + 1 OFFSET :offset
) AS c ON true
WHERE u.id = :user_id
ORDER BY c.updated_at DESC, c.id DESC;

-- name: count_user_conversations :val
SELECT count(*)
FROM conversations
WHERE user_id = :user_id;
