-- transactional: false

DROP INDEX CONCURRENTLY idx_message_deleted_at;
