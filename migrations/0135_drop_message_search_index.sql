-- 0134's partial GIN serves search now.
-- depends: 0134_live_message_search_index
-- transactional: false

DROP INDEX CONCURRENTLY idx_message_search;
