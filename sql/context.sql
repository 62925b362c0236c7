-- name: system_messages :many
-- The system messages of a conversation, which a context window (with include_system) puts first
-- whatever their age: oldest first from the keyset position (after_ts, after_id), along the
-- partial index idx_message_system, limit + 1 rows (the window reads on while they fit its
-- budget). Rows as a page's (messages.page_rows), with the window's token count and role.
-- The conversation's marker (messages.conversation_marker) comes last: no row at all means no
-- such conversation, the marker alone an existing one with no system message.
WITH page AS (
    (SELECT /*include messages.message_fields*/
     FROM messages AS m
     WHERE m.conversation_id = :conversation_id
       AND m.role = 'system'
       AND m.deleted_at IS NULL
       AND (m."timestamp", m.id) > (coalesce(:after_ts::timestamptz, '-infinity'), coalesce(:after_id::bigint, 0))
     ORDER BY m."timestamp", m.id
     LIMIT :limit::integer + 1)
    UNION ALL
    /*include messages.conversation_marker*/
)
/*include messages.page_rows*/
ORDER BY m."timestamp", m.id;
