-- transactional: false

DROP INDEX CONCURRENTLY idx_conversation_user_updated;
