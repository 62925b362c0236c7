-- Message metadata and token counts, step 2 of 4: fill the new columns of rows written before message_metadata_columns.
-- depends: 0019_message_metadata_columns
-- transactional: false
--
-- In batches of 5,000 ids, each committed on its own (as 0008 does): row locks are held briefly,
-- autovacuum can follow, and an interrupted run resumes where it stopped (only NULLs are touched).
-- One UPDATE per row sets all three message columns, so the table is rewritten once, not thrice.

DO $$
DECLARE
    batch_start bigint := (SELECT min(id) FROM messages);
    last_id bigint := (SELECT max(id) FROM messages);
BEGIN
    WHILE batch_start <= last_id LOOP
        UPDATE messages
        SET metadata = coalesce(metadata, '{}'),
            token_count = coalesce(token_count, token_estimate(content)),
            token_count_estimated = coalesce(token_count_estimated, true)
        WHERE id >= batch_start AND id < batch_start + 5000
          AND (metadata IS NULL OR token_count IS NULL OR token_count_estimated IS NULL);
        COMMIT;
        batch_start := batch_start + 5000;
    END LOOP;
END
$$;

DO $$
DECLARE
    batch_start bigint := (SELECT min(id) FROM conversations);
    last_id bigint := (SELECT max(id) FROM conversations);
BEGIN
    WHILE batch_start <= last_id LOOP
        UPDATE conversations
        SET metadata = '{}'
        WHERE id >= batch_start AND id < batch_start + 5000 AND metadata IS NULL;
        COMMIT;
        batch_start := batch_start + 5000;
    END LOOP;
END
$$;
