-- transactional: false

CREATE INDEX CONCURRENTLY idx_conversation_user_updated ON conversations (user_id, updated_at, id);
