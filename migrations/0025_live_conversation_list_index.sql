-- A user's live conversations, most recently active first: replaces 0006's index (dropped in
-- 0026), so deleted conversations cost the list nothing and writes keep one index, not two.
-- depends: 0024_live_message_page_index
-- transactional: false

CREATE INDEX CONCURRENTLY idx_conversation_live_user_updated ON conversations (user_id, updated_at, id)
    WHERE deleted_at IS NULL;
