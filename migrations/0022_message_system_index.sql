-- Message metadata and token counts, step 4 of 4: the index behind the context window's system
-- messages, which come first "whatever their age": without it, finding a conversation's system
-- messages would read the whole conversation. Partial, so it holds only system messages (few),
-- in (timestamp, id) order; built without blocking writes.
-- depends: 0021_message_metadata_not_null
-- transactional: false

CREATE INDEX CONCURRENTLY idx_message_system ON messages (conversation_id, "timestamp", id) WHERE role = 'system';
