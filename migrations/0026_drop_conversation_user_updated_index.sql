-- 0025's partial index serves the list now.
-- depends: 0025_live_conversation_list_index
-- transactional: false

DROP INDEX CONCURRENTLY idx_conversation_user_updated;
