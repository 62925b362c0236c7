-- 0019's partial GIN serves search now.
-- depends: 0019_live_message_search_index
-- transactional: false

DROP INDEX CONCURRENTLY idx_message_search;
