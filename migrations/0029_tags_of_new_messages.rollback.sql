-- depends: 0028_deleted_conversation_index

CREATE OR REPLACE FUNCTION message_topics_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO changes (entity, entity_id, op, conversation_id, user_id)
    SELECT 'message', m.id, 'updated', m.conversation_id, m.user_id
    FROM messages AS m
    WHERE m.id IN (SELECT t.message_id FROM changed_tags AS t)
      AND m.deleted_at IS NULL
      AND m.xmin <> xid(pg_current_xact_id())
      -- A scalar subquery, not NOT EXISTS: it stays a per-row check after the filters above (an
      -- anti-join could hash every change of a large transaction, such as a seed's, first).
      AND (SELECT c.seq FROM changes AS c
           WHERE c.xid = pg_current_xact_id()::text::bigint AND c.entity = 'message' AND c.entity_id = m.id
           LIMIT 1) IS NULL
    ORDER BY m.id;
    RETURN NULL;
END
$$;
