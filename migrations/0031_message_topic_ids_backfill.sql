-- Messages' copy of their topic ids, step 2 of 2: fill it for the rows written before
-- message_topic_ids (whose trigger keeps it from then on).
-- depends: 0030_message_topic_ids
-- transactional: false
--
-- In batches of 5,000 ids, each committed on its own (as 0020 does): row locks are held briefly,
-- autovacuum can follow, and an interrupted run resumes (a batch writes only copies that differ).
-- Each batch first locks its tagged messages, in a statement of its own, as the trigger does: the
-- statement that then computes their copy sees every tagging committed meanwhile. The change
-- feed's trigger on messages finds nothing to list in these updates (a copy is no change of a
-- message).

DO $$
DECLARE
    batch_start bigint := (SELECT min(message_id) FROM message_topics);
    last_id bigint := (SELECT max(message_id) FROM message_topics);
BEGIN
    WHILE batch_start <= last_id LOOP
        PERFORM 1 FROM messages AS m
        WHERE m.id >= batch_start AND m.id < batch_start + 5000
          AND m.id IN (SELECT mt.message_id FROM message_topics AS mt
                       WHERE mt.message_id >= batch_start AND mt.message_id < batch_start + 5000)
        ORDER BY m.id
        FOR NO KEY UPDATE;
        UPDATE messages AS m
        SET topic_ids = t.topic_ids
        FROM (
            SELECT mt.message_id, array_agg(mt.topic_id ORDER BY mt.topic_id) AS topic_ids
            FROM message_topics AS mt
            WHERE mt.message_id >= batch_start AND mt.message_id < batch_start + 5000
            GROUP BY mt.message_id
        ) AS t
        WHERE m.id = t.message_id AND m.topic_ids IS DISTINCT FROM t.topic_ids;
        COMMIT;
        batch_start := batch_start + 5000;
    END LOOP;
END
$$;
