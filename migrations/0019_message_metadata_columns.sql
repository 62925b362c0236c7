-- Message metadata and token counts, step 1 of 4 (the guide's pattern for NOT NULL columns on a
-- table with data): the columns, nullable.
-- depends: 0018_name_message_search_index
--
-- messages.metadata (a JSON object the writer chose), messages.token_count and
-- token_count_estimated (true when the service estimated the count: ceil(UTF-8 bytes / 4)),
-- conversations.metadata. Adding nullable columns without a default is a catalogue change (no
-- rewrite); message_metadata_backfill fills old rows in committed batches, message_metadata_not_null sets NOT NULL without a long lock.
--
-- Rows written while the migration runs (the previous release, COPY, hand-written INSERTs) get
-- their values too: the defaults cover metadata and the flag, and a row trigger fills an absent
-- token_count with the estimate. Its WHEN clause is checked in C, so writers that send a count
-- (the service always does) pay nothing. The CHECKs are NOT VALID here (no scan under the
-- ACCESS EXCLUSIVE lock); message_metadata_not_null validates them under a lock that lets reads and writes through.

SET LOCAL lock_timeout = '10s';

-- The estimate, named once for the trigger and the backfill (the service computes the same in Python).
CREATE FUNCTION token_estimate(content text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((octet_length(convert_to(content, 'UTF8')) + 3) / 4)::integer
$$;

ALTER TABLE messages
    ADD COLUMN metadata jsonb,
    ADD COLUMN token_count integer,
    ADD COLUMN token_count_estimated boolean;
ALTER TABLE messages
    ALTER COLUMN metadata SET DEFAULT '{}',
    ALTER COLUMN token_count_estimated SET DEFAULT true,
    ADD CONSTRAINT messages_metadata_object CHECK (jsonb_typeof(metadata) = 'object') NOT VALID,
    ADD CONSTRAINT messages_token_count_check CHECK (token_count >= 0) NOT VALID;

ALTER TABLE conversations ADD COLUMN metadata jsonb;
ALTER TABLE conversations
    ALTER COLUMN metadata SET DEFAULT '{}',
    ADD CONSTRAINT conversations_metadata_object CHECK (jsonb_typeof(metadata) = 'object') NOT VALID;

CREATE FUNCTION messages_token_estimate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.token_count := token_estimate(NEW.content);
    NEW.token_count_estimated := true;
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_token_count_on_insert
    BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.token_count IS NULL) EXECUTE FUNCTION messages_token_estimate();
