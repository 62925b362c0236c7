-- Back to tags in message_topics alone: the copy, its trigger and the feed trigger of migration 0029.
-- depends: 0029_tags_of_new_messages

DROP TRIGGER message_topics_to_rows_on_delete ON message_topics;
DROP TRIGGER message_topics_to_rows_on_insert ON message_topics;
DROP FUNCTION message_topic_ids_follow();
ALTER TABLE messages DROP COLUMN topic_ids;

CREATE OR REPLACE FUNCTION message_topics_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- add_messages' flag (set in the statement before the one that writes the tags, consumed here): every
    -- tag of this statement is on a message this transaction has just created, whose own item
    -- covers it. The query below would come to the same (no rows) after an index probe per tag.
    IF current_setting('freya.tags_of_new_messages', true) = 'on' THEN
        PERFORM set_config('freya.tags_of_new_messages', '', true);
        RETURN NULL;
    END IF;
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
