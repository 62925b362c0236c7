-- Deleted conversations by deletion time, for make purge; partial, so live rows are not in it.
-- depends: 0027_deleted_message_index
-- transactional: false

CREATE INDEX CONCURRENTLY idx_conversation_deleted_at ON conversations (deleted_at) WHERE deleted_at IS NOT NULL;
