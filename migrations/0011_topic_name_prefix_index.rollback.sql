-- transactional: false

DROP INDEX CONCURRENTLY idx_topic_name_prefix;
