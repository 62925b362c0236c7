DROP TRIGGER messages_counted_on_delete ON messages;
DROP TRIGGER messages_counted_on_insert ON messages;
DROP FUNCTION count_removed_messages();
DROP FUNCTION count_added_messages();
DROP FUNCTION topic_ids(text[]);
ALTER TABLE messages DROP COLUMN client_msg_id, DROP COLUMN edited_at;
