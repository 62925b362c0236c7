-- Each message's topic ids on its own row (messages.topic_ids, ascending; NULL: none), so a page
-- reads its messages' topics with its rows: probing idx_message_topic once per message of the page
-- cost about a third of what the page statement cost PostgreSQL (BENCHMARKS.md). message_topics
-- stays what tags are (the topic's messages are found through it); the column is its copy, step 1
-- of 2 (0031 fills the rows written before it, in batches):
--   * add_messages (messages.insert_new_messages) and the seed write the copy with the new rows
--     and say so with freya.tags_of_new_messages = 'copied' (0029's flag, which an add_messages
--     of before this migration still sets to 'on': its rows carry no copy, so the trigger below
--     computes theirs). The trigger fires after the change feed's trigger on the same event (a
--     table's triggers of one event fire in name order) and is the one that consumes the flag;
--   * after every other write of tags (tagging a message, untagging it, deleting a message or
--     restoring it, which sets its tags aside and puts them back) the trigger recomputes the copy
--     of the messages it touched. A deleted message's copy is NULL: its tags are set aside.
-- The trigger first locks the rows (in a statement of its own), so the recomputing statement's
-- snapshot includes every tagging of them committed while it waited: two concurrent taggings of
-- a message leave the copy as message_topics ends up. The tagging statements lock the message
-- as strongly (FOR NO KEY UPDATE, sql/topics.sql), so no two of them deadlock upgrading a lock.
-- The feed's trigger still sees the message row's old xmin (the trigger below runs after it), so
-- a tagging is still an 'updated' item of the message.
-- depends: 0029_tags_of_new_messages

ALTER TABLE messages ADD COLUMN topic_ids bigint[];

-- 0029's function, but the flag (either value) is left to message_topic_ids_follow to consume.
CREATE OR REPLACE FUNCTION message_topics_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- add_messages' flag: every tag of this statement is on a message this transaction has just
    -- created, whose own item covers it.
    IF current_setting('freya.tags_of_new_messages', true) IN ('on', 'copied') THEN
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

CREATE FUNCTION message_topic_ids_follow() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    flag text := current_setting('freya.tags_of_new_messages', true);
BEGIN
    IF flag IN ('on', 'copied') THEN
        PERFORM set_config('freya.tags_of_new_messages', '', true);  -- a later tag write is followed
        IF flag = 'copied' THEN
            RETURN NULL;
        END IF;
    END IF;
    -- A statement trigger fires for no rows too, and messages_updated (migration 0023) moves tags in
    -- statements that mostly move none: the UPDATE below fires it, so this ends the recursion.
    IF NOT EXISTS (SELECT 1 FROM changed_tags) THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM messages AS m
    WHERE m.id IN (SELECT t.message_id FROM changed_tags AS t)
    ORDER BY m.id
    FOR NO KEY UPDATE;
    UPDATE messages AS m
    SET topic_ids = (SELECT array_agg(mt.topic_id ORDER BY mt.topic_id)
                     FROM message_topics AS mt WHERE mt.message_id = m.id)
    WHERE m.id IN (SELECT t.message_id FROM changed_tags AS t);
    RETURN NULL;
END
$$;

CREATE TRIGGER message_topics_to_rows_on_insert
    AFTER INSERT ON message_topics REFERENCING NEW TABLE AS changed_tags
    FOR EACH STATEMENT EXECUTE FUNCTION message_topic_ids_follow();

CREATE TRIGGER message_topics_to_rows_on_delete
    AFTER DELETE ON message_topics REFERENCING OLD TABLE AS changed_tags
    FOR EACH STATEMENT EXECUTE FUNCTION message_topic_ids_follow();
