-- transactional: false

DROP INDEX CONCURRENTLY IF EXISTS idx_message_search_scoped;
