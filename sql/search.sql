-- name: plan_for_these_values :val
-- Searches differ too much for one plan: a rare word wants the GIN index, a common word in one
-- conversation wants that conversation's index. Called first in the search's transaction, this
-- makes PostgreSQL plan the next statement for its actual values instead of reusing the generic
-- plan of the prepared statement.
SELECT set_config('plan_cache_mode', 'force_custom_plan', true);

-- fragment: matching_messages
-- The messages matching :q (web-search syntax, on the stored messages.search) and the optional
-- filters, NULL when not given. Run after plan_for_these_values, so each search is planned for
-- its own filters.
m.search @@ search_query(:q)
      AND (:conversation_id::bigint IS NULL OR m.conversation_id = :conversation_id::bigint)
      AND (:user_id::bigint IS NULL OR m.user_id = :user_id::bigint)
      AND (:role::text IS NULL OR m.role = :role::text)
      AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
      AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')
      AND (:topic::text IS NULL OR EXISTS (
              SELECT 1 FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
              WHERE mt.message_id = m.id AND t.name = :topic::text))

-- name: search_messages_by_rank :many
-- Matching messages, best first: ts_rank_cd on the stored messages.search (never recomputing
-- to_tsvector), ties by id; keyset after (before_rank, before_id), limit + 1 rows. Every match
-- is ranked (ranking needs them all), but only the page's rows get a ts_headline. A row is the
-- message's columns, its rank and its highlight; topics come from topics.tags_of_messages.
WITH page AS (
    SELECT m.id, ts_rank_cd(m.search, search_query(:q)) AS rank
    FROM messages AS m
    WHERE /*include matching_messages*/
      AND (ts_rank_cd(m.search, search_query(:q)), m.id)
          < (coalesce(:before_rank::real, 'Infinity'), coalesce(:before_id::bigint, 9223372036854775807))
    ORDER BY rank DESC, m.id DESC
    LIMIT :limit::integer + 1 OFFSET :offset
)
SELECT /*include messages.message_columns*/, p.rank, search_headline(m.content, search_query(:q)) AS highlight
FROM page AS p
JOIN messages AS m ON m.id = p.id
ORDER BY p.rank DESC, p.id DESC;

-- name: search_messages_by_recent :many
-- Matching messages, newest first by (timestamp, id), keyset after (before_ts, before_id).
WITH page AS (
    SELECT m.id, m."timestamp", ts_rank_cd(m.search, search_query(:q)) AS rank
    FROM messages AS m
    WHERE /*include matching_messages*/
      AND m."timestamp" <= coalesce(:before_ts::timestamptz, 'infinity')
      AND (m."timestamp", m.id) < (coalesce(:before_ts::timestamptz, 'infinity'),
                                   coalesce(:before_id::bigint, 9223372036854775807))
    ORDER BY m."timestamp" DESC, m.id DESC
    LIMIT :limit::integer + 1 OFFSET :offset
)
SELECT /*include messages.message_columns*/, p.rank, search_headline(m.content, search_query(:q)) AS highlight
FROM page AS p
JOIN messages AS m ON m.id = p.id
ORDER BY p."timestamp" DESC, p.id DESC;

-- name: count_matching_messages :val
SELECT count(*)
FROM messages AS m
WHERE /*include matching_messages*/;

-- name: search_topics :many
-- Topic names matching :q by full text (GIN on topics.search) or by prefix (the byte range
-- [prefix_from, prefix_to) on idx_topic_name_prefix); prefix matches first, then by rank and name.
SELECT t.id, t.name, t.created_at,
       (SELECT count(*) FROM message_topics AS mt WHERE mt.topic_id = t.id) AS message_count,
       ts_rank_cd(t.search, search_query(:q)) AS rank,
       (t.name ~>=~ :prefix_from::text AND (:prefix_to::text IS NULL OR t.name ~<~ :prefix_to::text)) AS prefix_match
FROM topics AS t
WHERE t.search @@ search_query(:q)
   OR (t.name ~>=~ :prefix_from::text AND (:prefix_to::text IS NULL OR t.name ~<~ :prefix_to::text))
ORDER BY prefix_match DESC, rank DESC, t.name
LIMIT :limit;
