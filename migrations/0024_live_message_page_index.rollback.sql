-- transactional: false

DROP INDEX CONCURRENTLY idx_message_live_timestamp;
