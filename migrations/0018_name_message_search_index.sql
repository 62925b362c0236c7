-- Search scoped to a user or a conversation, step 3 of 3: the scoped index takes the name the search
-- index has always had. Renaming an index takes only a SHARE UPDATE EXCLUSIVE lock: reads and
-- writes go on.
-- depends: 0017_drop_single_column_search_index

SET LOCAL lock_timeout = '10s';

ALTER INDEX idx_message_search_scoped RENAME TO idx_message_search;
