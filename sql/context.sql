-- name: context_window :many
-- The newest messages of a conversation whose token_count sum fits max_tokens, as a prompt needs
-- them, in ONE statement whose cost follows the answer, not the conversation:
--   * system messages (with include_system) come first whatever their age, found through the
--     partial index idx_message_system, and are counted in the budget;
--   * the other messages (role-filtered) are walked newest first along idx_message_timestamp
--     with a running sum. PostgreSQL's window "run conditions" stop a scan early for row_number()
--     or count() but not for sum(), so the walk is a MATERIALIZED CTE, which PostgreSQL fills
--     only as far as its readers ask: over_budget reads it up to the first message that no longer
--     fits (LIMIT 1) and the answer takes the rows before that one. Rows beyond it are never read.
-- One row per message (system part first, then oldest first): the message's columns (fields=
-- projects them), its id and token count, and on every row system_tokens and truncated (older messages were left
-- out). The conversation is the outer side of the join: an existing one with nothing to show
-- gives one row whose sort_id is NULL; no row at all means no such conversation.
WITH conversation AS (
    SELECT c.id FROM conversations AS c WHERE c.id = :conversation_id
),
system_part AS (
    SELECT m.id, m.conversation_id, m.user_id, m.role, m.content, m."timestamp", m.edited_at, m.metadata,
           m.token_count, m.token_count_estimated
    FROM messages AS m
    WHERE :include_system::boolean AND m.conversation_id = :conversation_id AND m.role = 'system'
),
budget AS (
    SELECT coalesce(sum(s.token_count), 0) AS system_tokens FROM system_part AS s
),
walk AS MATERIALIZED (
    SELECT m.id, m.conversation_id, m.user_id, m.role, m.content, m."timestamp", m.edited_at, m.metadata,
           m.token_count, m.token_count_estimated,
           row_number() OVER newest_first AS n, sum(m.token_count) OVER newest_first AS spent
    FROM messages AS m
    WHERE m.conversation_id = :conversation_id
      AND (:role::text IS NULL OR m.role = :role::text)
      AND NOT (:include_system::boolean AND m.role = 'system')
    WINDOW newest_first AS (ORDER BY m."timestamp" DESC, m.id DESC ROWS UNBOUNDED PRECEDING)
),
over_budget AS (
    -- Read in the walk's order: the first message past the budget (token counts are >= 0, so
    -- spent only grows).
    SELECT w.n FROM walk AS w WHERE w.spent > :max_tokens::integer - (SELECT b.system_tokens FROM budget AS b) LIMIT 1
),
chosen AS (
    SELECT 0 AS part, s.id, s.conversation_id, s.user_id, s.role, s.content, s."timestamp", s.edited_at, s.metadata,
           s.token_count, s.token_count_estimated
    FROM system_part AS s
    UNION ALL
    (SELECT 1, w.id, w.conversation_id, w.user_id, w.role, w.content, w."timestamp", w.edited_at, w.metadata,
            w.token_count, w.token_count_estimated
     FROM walk AS w
     LIMIT (SELECT o.n - 1 FROM over_budget AS o))
)
SELECT /*include messages.message_columns*/, m.id AS sort_id, m.token_count AS tokens, b.system_tokens,
       EXISTS (SELECT 1 FROM over_budget) AS truncated
FROM conversation AS c
CROSS JOIN budget AS b
LEFT JOIN chosen AS m ON true
ORDER BY m.part, m."timestamp", m.id;
