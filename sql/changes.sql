-- name: read_changes :many
-- The feed after the cursor (after_xid, after_seq), in (xid, seq) order, holding only changes of
-- transactions below this statement's snapshot xmin: those have all ended, and any transaction
-- that commits later has an xid at or above xmin, so no change can ever appear behind a cursor
-- (migration 0023 has the reasoning). Always one row at least: the first carries the feed's
-- state (visible_below, the pruned horizon), the rest are the page's changes (NULLs when empty).
WITH feed AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS visible_below, h.xid AS pruned_xid,
           h.seq AS pruned_seq
    FROM changes_horizon AS h
),
page AS (
    SELECT c.xid, c.seq, c.entity, c.entity_id, c.op, c.at, c.conversation_id, c.user_id
    FROM changes AS c
    WHERE (c.xid, c.seq) > (:after_xid::bigint, :after_seq::bigint)
      AND c.xid < (SELECT visible_below FROM feed)
    ORDER BY c.xid, c.seq
    LIMIT :limit
)
SELECT f.visible_below, f.pruned_xid, f.pruned_seq,
       p.xid, p.seq, p.entity::text AS entity, p.entity_id, p.op::text AS op, p.at, p.conversation_id, p.user_id
FROM feed AS f
LEFT JOIN page AS p ON true
ORDER BY p.xid, p.seq;

-- name: feed_head :one
-- The newest change a reader can see now (see read_changes); it moves when a change commits and
-- every older transaction has ended. One row off the end of the primary key.
SELECT c.xid, c.seq
FROM changes AS c
WHERE c.xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY c.xid DESC, c.seq DESC
LIMIT 1;

-- name: prune_changes :val
-- Deletes up to :batch of the oldest changes made more than :older_than ago (of ended transactions),
-- stopping at the first one that is newer, and moves changes_horizon to the last one deleted:
-- a cursor before it then answers 410. Returns how many were deleted.
WITH head AS (
    SELECT c.xid, c.seq, c.at
    FROM changes AS c
    WHERE (c.xid, c.seq) > (SELECT h.xid, h.seq FROM changes_horizon AS h)
      AND c.xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY c.xid, c.seq
    LIMIT :batch
),
first_kept AS (
    SELECT xid, seq FROM head WHERE at >= now() - :older_than::interval ORDER BY xid, seq LIMIT 1
),
doomed AS (
    SELECT xid, seq FROM head
    WHERE NOT EXISTS (SELECT 1 FROM first_kept) OR (xid, seq) < (SELECT xid, seq FROM first_kept)
),
removed AS (
    DELETE FROM changes AS c
    USING doomed AS d
    WHERE c.xid = d.xid AND c.seq = d.seq
    RETURNING c.xid, c.seq
),
moved AS (
    UPDATE changes_horizon AS h
    SET (xid, seq) = (SELECT r.xid, r.seq FROM removed AS r ORDER BY r.xid DESC, r.seq DESC LIMIT 1)
    WHERE EXISTS (SELECT 1 FROM removed)
    RETURNING h.xid
)
SELECT count(*) FROM removed;
