-- A conversation's live messages in page order: deleted messages cost its pages nothing (the
-- guide's idx_message_timestamp stays as it is). id is the keyset's tie-breaker.
-- depends: 0023_history_lifecycle
-- transactional: false

CREATE INDEX CONCURRENTLY idx_message_live_timestamp ON messages (conversation_id, "timestamp", id)
    WHERE deleted_at IS NULL;
