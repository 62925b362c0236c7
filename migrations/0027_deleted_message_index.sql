-- Deleted messages by deletion time, for make purge; partial, so live rows are not in it.
-- depends: 0026_drop_conversation_user_updated_index
-- transactional: false

CREATE INDEX CONCURRENTLY idx_message_deleted_at ON messages (deleted_at) WHERE deleted_at IS NOT NULL;
