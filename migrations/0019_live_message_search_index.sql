-- Full-text search over live messages only: replaces 0009's GIN (dropped in 0020), so deleted
-- messages are never matched and rechecked.
-- depends: 0018_drop_conversation_user_updated_index
-- transactional: false

CREATE INDEX CONCURRENTLY idx_message_live_search ON messages USING gin (search) WHERE deleted_at IS NULL;
