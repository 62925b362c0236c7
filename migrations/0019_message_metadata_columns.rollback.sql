DROP TRIGGER messages_token_count_on_insert ON messages;
DROP FUNCTION messages_token_estimate();
ALTER TABLE conversations DROP COLUMN metadata;
ALTER TABLE messages DROP COLUMN metadata, DROP COLUMN token_count, DROP COLUMN token_count_estimated;
DROP FUNCTION token_estimate(text);
