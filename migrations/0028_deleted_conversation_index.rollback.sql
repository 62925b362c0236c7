-- transactional: false

DROP INDEX CONCURRENTLY idx_conversation_deleted_at;
