-- A user's conversations, most recently active first, paged by keyset on (updated_at, id):
-- the guide's idx_conversation_user_id finds the user's rows but leaves a sort of all of them
-- for every page; this index returns a page in order and stops after it.
-- depends: 0005_message_client_msg_id_index
-- transactional: false

CREATE INDEX CONCURRENTLY idx_conversation_user_updated ON conversations (user_id, updated_at, id);
