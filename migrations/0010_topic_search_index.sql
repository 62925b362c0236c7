-- Full-text search, step 4 of 4: the GIN index on topics.search.
-- depends: 0009_message_search_index
-- transactional: false

CREATE INDEX CONCURRENTLY idx_topic_search ON topics USING gin (search);
