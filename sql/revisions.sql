-- name: list_revisions :many
-- A live message's earlier versions, newest first, after the keyset position before_revision when
-- a cursor is given, skipping :offset rows for offset pages; limit + 1 rows, the extra one says
-- more follow. The message is the outer side of the join: no row at all when it does not exist
-- or is deleted, one row of NULLs an empty page. Served by the primary key (message_id, revision).
SELECT r.revision, r.role, r.content, r.edited_at
FROM messages AS m
LEFT JOIN LATERAL (
    SELECT v.revision, v.role, v.content, v.edited_at
    FROM message_revisions AS v
    WHERE v.message_id = m.id
      AND v.revision < coalesce(:before_revision::integer, 2147483647)
    ORDER BY v.revision DESC
    LIMIT :limit::integer + 1 OFFSET :offset
) AS r ON true
WHERE m.id = :message_id AND m.deleted_at IS NULL
ORDER BY r.revision DESC;

-- name: count_revisions :val
SELECT count(*)
FROM message_revisions
WHERE message_id = :message_id;
