-- Unique client_msg_id per conversation: a retried message is found, not stored twice, and
-- INSERT … ON CONFLICT uses this index as its arbiter. Partial: most messages carry no key.
-- Built CONCURRENTLY so writers keep going on a large table; that cannot run in a transaction.
-- depends: 0004_chat_api
-- transactional: false

CREATE UNIQUE INDEX CONCURRENTLY idx_message_client_msg_id ON messages (conversation_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
