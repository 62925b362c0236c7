-- transactional: false

DROP INDEX CONCURRENTLY idx_topic_search;
