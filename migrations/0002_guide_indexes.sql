-- The database guide's seven indexes, with its exact names and column lists, on our plural tables.
-- depends: 0001_initial_schema
--
-- The two unique indexes then become the tables' unique constraints (USING INDEX keeps the
-- index and its name), so uniqueness is a named constraint without a second, duplicate index.

CREATE INDEX idx_conversation_user_id ON conversations(user_id);
CREATE INDEX idx_message_conversation_id ON messages(conversation_id);
CREATE INDEX idx_message_user_id ON messages(user_id);
CREATE INDEX idx_message_timestamp ON messages(conversation_id, timestamp);
CREATE UNIQUE INDEX idx_user_email ON users(email);
CREATE UNIQUE INDEX idx_topic_name ON topics(name);
CREATE INDEX idx_message_topic ON message_topics(message_id, topic_id);

ALTER TABLE users ADD CONSTRAINT idx_user_email UNIQUE USING INDEX idx_user_email;
ALTER TABLE topics ADD CONSTRAINT idx_topic_name UNIQUE USING INDEX idx_topic_name;
