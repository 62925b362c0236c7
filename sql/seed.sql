-- name: reserve_ids :val
-- Ids for the rows a seed COPYs, drawn from the table's own identity sequence: the same values
-- the service would hand out, so they never collide with rows written before, during or after
-- the seed, and no setval is needed (nor ever left undone). A rolled-back seed leaves a gap.
WITH sequence AS (
    SELECT pg_get_serial_sequence(:table::text, 'id')::regclass AS name
)
SELECT array_agg(reserved.id ORDER BY reserved.id)
FROM (
    SELECT nextval(sequence.name) AS id
    FROM sequence, generate_series(1, :count::int)
) AS reserved;

-- name: topic_ids :many
-- The seed's topics by name: existing ones as they are, missing ones created (migration 0004).
SELECT id, name
FROM topic_ids(:names::text[]);

-- name: tags_of_new_messages :val
-- Said before the seed COPYs a batch's tags: they are on messages this transaction has just
-- written with their copy (messages.topic_ids), so the tags' triggers (migrations 0029, 0030) skip
-- them, as they skip add_messages' tags. The next write of tags consumes it.
SELECT set_config('freya.tags_of_new_messages', 'copied', true) = 'copied';
