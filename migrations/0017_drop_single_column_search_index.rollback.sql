-- transactional: false

CREATE INDEX CONCURRENTLY idx_message_search ON messages USING gin (search);
