-- Back to hard deletes: what is soft-deleted now is deleted for good, as it would have been.
DROP TRIGGER topics_changes_on_insert ON topics;
DROP TRIGGER message_topics_changes_on_delete ON message_topics;
DROP TRIGGER message_topics_changes_on_insert ON message_topics;
DROP TRIGGER messages_changes_on_update ON messages;
DROP TRIGGER messages_changes_on_delete ON messages;
DROP TRIGGER messages_changes_on_insert ON messages;
DROP TRIGGER conversations_changes_on_update ON conversations;
DROP TRIGGER conversations_changes_on_delete ON conversations;
DROP TRIGGER conversations_changes_on_insert ON conversations;
DROP TRIGGER users_changes_on_update ON users;
DROP TRIGGER users_changes_on_delete ON users;
DROP TRIGGER users_changes_on_insert ON users;
DROP FUNCTION topics_changed(), message_topics_changed(), messages_updated(), messages_changed(),
    conversation_updated(), conversations_changed(), user_updated(), users_changed(), hard_delete_op();

-- count_removed_messages still counts live rows only here: these left message_count already.
DELETE FROM messages WHERE deleted_at IS NOT NULL;
DELETE FROM conversations WHERE deleted_at IS NOT NULL;

CREATE OR REPLACE FUNCTION count_removed_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- When the conversation itself is being deleted, its row is already gone: nothing to update.
    UPDATE conversations AS c
    SET message_count = c.message_count - removed.n
    FROM (
        SELECT conversation_id, count(*) AS n
        FROM old_messages
        GROUP BY conversation_id
    ) AS removed
    WHERE c.id = removed.conversation_id;
    RETURN NULL;
END
$$;

DROP TABLE changes_horizon, changes, deleted_message_topics, message_revisions;
DROP TYPE change_op, change_entity;
ALTER TABLE messages DROP COLUMN deleted_with_conversation, DROP COLUMN deleted_at;
ALTER TABLE conversations DROP COLUMN deleted_at;
