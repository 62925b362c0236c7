SET LOCAL lock_timeout = '10s';

ALTER INDEX idx_message_search RENAME TO idx_message_search_scoped;
