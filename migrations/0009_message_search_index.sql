-- Full-text search, step 3 of 4: the GIN index on messages.search, built without blocking writes.
-- depends: 0008_search_backfill
-- transactional: false

CREATE INDEX CONCURRENTLY idx_message_search ON messages USING gin (search);
