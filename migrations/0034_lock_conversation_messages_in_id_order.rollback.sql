-- Back to migration 0023's conversation_updated: it locks the messages in the order it finds them.
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
        UPDATE messages
        SET deleted_at = NEW.deleted_at, deleted_with_conversation = true
        WHERE conversation_id = NEW.id AND deleted_at IS NULL;
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        UPDATE messages
        SET deleted_at = NULL, deleted_with_conversation = false
        WHERE conversation_id = NEW.id AND deleted_with_conversation;
    END IF;
    RETURN NULL;
END
$$;
