-- Full-text search, step 2 of 4: fill messages.search for rows written before the trigger.
-- depends: 0007_search_columns
-- transactional: false
--
-- In batches of 5,000 ids, each committed on its own: row locks are held briefly, autovacuum can
-- follow, and an interrupted run resumes where it stopped (it only touches rows still NULL).

DO $$
DECLARE
    batch_start bigint := (SELECT min(id) FROM messages);
    last_id bigint := (SELECT max(id) FROM messages);
BEGIN
    WHILE batch_start <= last_id LOOP
        UPDATE messages
        SET search = search_vector(content)
        WHERE id >= batch_start AND id < batch_start + 5000 AND search IS NULL;
        COMMIT;
        batch_start := batch_start + 5000;
    END LOOP;
END
$$;
