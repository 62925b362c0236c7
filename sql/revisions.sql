-- fragment: revision_columns
v.revision, v.role, v.content, v.edited_at

-- name: list_revisions :many
-- A live message's earlier versions, newest first, after the keyset position before_revision when
-- a cursor is given, skipping :offset rows for offset pages; limit + 1 rows, the extra one says
-- more follow. Served by the primary key (message_id, revision). The message's marker comes first
-- (as a conversation's in messages.list_messages_newest_first): one row of NULLs when the message
-- is live, none when it does not exist or is deleted (and then neither do its revisions here).
WITH live AS MATERIALIZED (
    SELECT m.id FROM messages AS m WHERE m.id = :message_id AND m.deleted_at IS NULL
)
SELECT /*include revision_columns*/
FROM (
    (SELECT /*include revision_columns*/
     FROM message_revisions AS v
     WHERE v.message_id = (SELECT l.id FROM live AS l)
       AND v.revision < coalesce(:before_revision::integer, 2147483647)
     ORDER BY v.revision DESC
     LIMIT :limit::integer + 1 OFFSET :offset)
    UNION ALL
    SELECT /*include revision_columns*/
    FROM live
    LEFT JOIN message_revisions AS v ON false
) AS v
ORDER BY v.revision DESC;

-- name: count_revisions :val
SELECT count(*)
FROM message_revisions
WHERE message_id = :message_id;
