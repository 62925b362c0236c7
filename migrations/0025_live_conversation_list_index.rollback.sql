-- transactional: false

DROP INDEX CONCURRENTLY idx_conversation_live_user_updated;
