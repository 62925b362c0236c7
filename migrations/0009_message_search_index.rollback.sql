-- transactional: false

DROP INDEX CONCURRENTLY idx_message_search;
