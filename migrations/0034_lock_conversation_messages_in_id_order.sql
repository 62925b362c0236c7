-- A conversation's delete or restore locks the messages it marks in id order before marking them,
-- as a bulk edit (messages.update_messages), a topic assignment (topics.assign_topics) and a
-- user's erasure (users.lock_messages_of_user) lock theirs. Migration 0023's UPDATE alone locked
-- them in the order its scan found them (by time, or as stored), so a delete and a bulk edit of
-- the same messages could each hold one the other wanted: a deadlock, which PostgreSQL breaks
-- only after deadlock_timeout (1 s) by rolling one back. In one order, the second waits instead.
-- depends: 0033_search_headline_inlined

CREATE OR REPLACE FUNCTION conversation_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO changes (entity, entity_id, op, conversation_id, user_id)
    VALUES ('conversation', NEW.id,
            CASE WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN 'deleted'
                 WHEN OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN 'restored'
                 ELSE 'updated' END::change_op,
            NEW.id, NEW.user_id);
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        PERFORM FROM messages
        WHERE conversation_id = NEW.id AND deleted_at IS NULL
        ORDER BY id
        FOR NO KEY UPDATE;
        UPDATE messages
        SET deleted_at = NEW.deleted_at, deleted_with_conversation = true
        WHERE conversation_id = NEW.id AND deleted_at IS NULL;
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        PERFORM FROM messages
        WHERE conversation_id = NEW.id AND deleted_with_conversation
        ORDER BY id
        FOR NO KEY UPDATE;
        UPDATE messages
        SET deleted_at = NULL, deleted_with_conversation = false
        WHERE conversation_id = NEW.id AND deleted_with_conversation;
    END IF;
    RETURN NULL;
END
$$;
