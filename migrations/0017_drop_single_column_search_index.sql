-- Search scoped to a user or a conversation, step 2 of 3: the single-column GIN index of 0009 goes;
-- 0016's index answers whole-corpus searches as well (see there), and every GIN index on messages
-- is paid for by every insert.
-- depends: 0016_message_search_scoped_index
-- transactional: false

DROP INDEX CONCURRENTLY idx_message_search;
