ALTER TABLE topics DROP CONSTRAINT idx_topic_name;
ALTER TABLE users DROP CONSTRAINT idx_user_email;
DROP INDEX idx_message_topic;
DROP INDEX idx_message_timestamp;
DROP INDEX idx_message_user_id;
DROP INDEX idx_message_conversation_id;
DROP INDEX idx_conversation_user_id;
