-- Search scoped to a user or a conversation, step 1 of 3: a GIN index over (user_id,
-- conversation_id, search), built without blocking writes.
-- depends: 0015_btree_gin
-- transactional: false
--
-- With search alone in the index, "word X in user U's messages" had to choose between the word's
-- posting list (every match in the corpus, then filtered by user) and the user's btree (every
-- message of the user, then filtered by word): for a user with a quarter of all messages both
-- cost what the user's history costs. In a multicolumn GIN index each column's entries are kept
-- apart and a scan ANDs the posting lists of the columns its conditions name, skipping ahead in
-- the longer list: the search costs what its matches cost. Any subset of the columns can be
-- searched equally well, so this one index also serves conversation_id with search, and search
-- alone (whole-corpus): 0017 drops the old single-column index, 0018 gives this one its name.
-- A message adds two more entries than before, not a second copy of its words.

CREATE INDEX CONCURRENTLY idx_message_search_scoped ON messages USING gin (user_id, conversation_id, search);
