-- name: plan_for_this_conversation :val
-- Conversations differ too much in size for one plan of context_window: the generic plan that a
-- prepared statement switches to after five runs takes every conversation for a small one and
-- sorts all of a large one (250,000 messages: 13,800 pages read instead of 630, 150 ms instead of
-- 1 ms). Called first in the window's transaction, this has PostgreSQL plan the window for its
-- own values each time.
SELECT set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: context_window :many
-- The newest messages of a conversation whose token_count sum fits max_tokens, as a prompt needs
-- them, in ONE statement whose cost follows the answer, not the conversation:
--   * system messages (with include_system) come first whatever their age, found through the
--     partial index idx_message_system, and are counted in the budget;
--   * the other messages (role-filtered) are walked newest first along idx_message_live_timestamp in
--     chunks of 128, each a keyset range starting after the previous chunk (as a list page does),
--     until a chunk passes the budget or the conversation ends. PostgreSQL's window "run
--     conditions" stop a scan for row_number() or count() but not for sum(), and a plain running
--     sum gives the planner no hint that the scan stops early (it then sorts the whole
--     conversation); a recursive walk of LIMITed index ranges reads at most one chunk too many.
-- One row per message (system part first, then oldest first): the message's columns (fields=
-- projects them), its id and token count, its topic ids (a part, left out when fields= leaves
-- topics out), and on every row system_tokens and truncated (older messages were left out). The conversation is the outer side of the join: an existing one with
-- nothing to show gives one row whose sort_id is NULL; no row at all means no such conversation.
WITH RECURSIVE conversation AS (
    SELECT c.id FROM conversations AS c WHERE c.id = :conversation_id AND c.deleted_at IS NULL
),
system_part AS (
    SELECT m.id, m."timestamp", m.token_count
    FROM messages AS m
    WHERE :include_system::boolean AND m.conversation_id = :conversation_id AND m.role = 'system'
      AND m.deleted_at IS NULL
),
budget AS (
    SELECT coalesce(sum(s.token_count), 0) AS system_tokens,
           :max_tokens::integer - coalesce(sum(s.token_count), 0) AS left_for_others
    FROM system_part AS s
),
chunk AS (
    -- n = 0 is the start; each next chunk holds ids and token counts newest first, the position
    -- of its last row, the tokens spent before it and with it, and whether it was full.
    SELECT 0 AS n, '{}'::bigint[] AS ids, '{}'::integer[] AS tokens, NULL::timestamptz AS last_ts,
           NULL::bigint AS last_id, 0::bigint AS spent_before, 0::bigint AS spent, true AS full
    UNION ALL
    SELECT c.n + 1, page.ids, page.tokens, page.stamps[cardinality(page.stamps)], page.ids[cardinality(page.ids)],
           c.spent, c.spent + page.chunk_tokens, cardinality(page.ids) = 128
    FROM chunk AS c
    CROSS JOIN LATERAL (
        SELECT array_agg(p.id ORDER BY p."timestamp" DESC, p.id DESC) AS ids,
               array_agg(p.token_count ORDER BY p."timestamp" DESC, p.id DESC) AS tokens,
               array_agg(p."timestamp" ORDER BY p."timestamp" DESC, p.id DESC) AS stamps,
               sum(p.token_count) AS chunk_tokens
        FROM (
            SELECT m.id, m."timestamp", m.token_count
            FROM messages AS m
            WHERE m.conversation_id = :conversation_id
              AND m.deleted_at IS NULL
              AND (:role::text IS NULL OR m.role = :role::text)
              AND NOT (:include_system::boolean AND m.role = 'system')
              AND m."timestamp" <= coalesce(c.last_ts, 'infinity')
              AND (m."timestamp", m.id) < (coalesce(c.last_ts, 'infinity'), coalesce(c.last_id, 9223372036854775807))
            ORDER BY m."timestamp" DESC, m.id DESC
            LIMIT 128
        ) AS p
        HAVING count(*) > 0
    ) AS page
    WHERE c.full AND c.spent <= (SELECT b.left_for_others FROM budget AS b)
),
walked AS (
    SELECT w.id, w.position, c.spent_before + sum(w.tokens) OVER (PARTITION BY c.n ORDER BY w.position) AS spent
    FROM chunk AS c
    CROSS JOIN LATERAL unnest(c.ids, c.tokens) WITH ORDINALITY AS w (id, tokens, position)
),
chosen AS (
    SELECT 0 AS part, s.id FROM system_part AS s
    UNION ALL
    SELECT 1, w.id FROM walked AS w WHERE w.spent <= (SELECT b.left_for_others FROM budget AS b)
),
outcome AS MATERIALIZED (
    -- Computed once (not per answer row): did the walk meet a message that does not fit?
    SELECT b.system_tokens, EXISTS (SELECT 1 FROM walked AS w WHERE w.spent > b.left_for_others) AS truncated
    FROM budget AS b
)
SELECT /*include messages.message_columns*/, m.id AS sort_id, m.token_count AS tokens, o.system_tokens, o.truncated/*part topics*/,
       m.topic_ids/*end part*/
FROM conversation AS c
CROSS JOIN outcome AS o
LEFT JOIN (chosen AS x JOIN messages AS m ON m.id = x.id) ON true
ORDER BY x.part, m."timestamp", m.id;
