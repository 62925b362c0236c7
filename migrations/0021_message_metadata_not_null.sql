-- Message metadata and token counts, step 3 of 4: NOT NULL, without scanning under a long lock.
-- depends: 0020_message_metadata_backfill
--
-- SET NOT NULL alone scans the whole table under ACCESS EXCLUSIVE (no reads, no writes). Instead
-- a CHECK (… IS NOT NULL) is added NOT VALID (instant) and validated, a scan that holds only
-- SHARE UPDATE EXCLUSIVE (reads and writes go on); SET NOT NULL then trusts the validated CHECK
-- and skips its own scan, and the helper CHECK is dropped. The same validation makes the
-- NOT VALID rules of message_metadata_columns (token_count >= 0, metadata is an object) hold for old rows too.

SET LOCAL lock_timeout = '10s';

ALTER TABLE messages
    ADD CONSTRAINT messages_metadata_not_null CHECK (metadata IS NOT NULL) NOT VALID,
    ADD CONSTRAINT messages_token_count_not_null CHECK (token_count IS NOT NULL) NOT VALID,
    ADD CONSTRAINT messages_token_count_estimated_not_null CHECK (token_count_estimated IS NOT NULL) NOT VALID;
ALTER TABLE messages VALIDATE CONSTRAINT messages_metadata_not_null;
ALTER TABLE messages VALIDATE CONSTRAINT messages_token_count_not_null;
ALTER TABLE messages VALIDATE CONSTRAINT messages_token_count_estimated_not_null;
ALTER TABLE messages VALIDATE CONSTRAINT messages_metadata_object;
ALTER TABLE messages VALIDATE CONSTRAINT messages_token_count_check;
ALTER TABLE messages
    ALTER COLUMN metadata SET NOT NULL,
    ALTER COLUMN token_count SET NOT NULL,
    ALTER COLUMN token_count_estimated SET NOT NULL,
    DROP CONSTRAINT messages_metadata_not_null,
    DROP CONSTRAINT messages_token_count_not_null,
    DROP CONSTRAINT messages_token_count_estimated_not_null;

ALTER TABLE conversations ADD CONSTRAINT conversations_metadata_not_null CHECK (metadata IS NOT NULL) NOT VALID;
ALTER TABLE conversations VALIDATE CONSTRAINT conversations_metadata_not_null;
ALTER TABLE conversations VALIDATE CONSTRAINT conversations_metadata_object;
ALTER TABLE conversations
    ALTER COLUMN metadata SET NOT NULL,
    DROP CONSTRAINT conversations_metadata_not_null;
