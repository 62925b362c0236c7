-- transactional: false

DROP INDEX CONCURRENTLY idx_message_client_msg_id;
