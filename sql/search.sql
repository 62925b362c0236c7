-- name: plan_for_these_values :val
-- Searches differ too much for one plan: a rare word wants the GIN index, a common word in one
-- conversation wants that conversation's index. Called first in the search's transaction, this
-- makes PostgreSQL plan the next statement for its actual values instead of reusing the generic
-- plan of the prepared statement.
SELECT set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: search_messages_by_rank :many
-- Messages matching :q (web-search syntax), best first: ts_rank_cd on the stored messages.search
-- (never recomputing to_tsvector), ties by id; keyset after (before_rank, before_id). Every match
-- is ranked (ranking needs them all), but only the page's rows get a ts_headline and topics.
-- Optional filters are NULL when not given; run after plan_for_these_values, so each search is
-- planned for its own filters.
WITH hit AS (
    SELECT m.id, m.conversation_id, m.user_id, m.role, m.content, m."timestamp", m.edited_at,
           ts_rank_cd(m.search, search_query(:q)) AS rank
    FROM messages AS m
    WHERE m.search @@ search_query(:q)
      AND (:conversation_id::bigint IS NULL OR m.conversation_id = :conversation_id::bigint)
      AND (:user_id::bigint IS NULL OR m.user_id = :user_id::bigint)
      AND (:role::text IS NULL OR m.role = :role::text)
      AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
      AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')
      AND (:topic::text IS NULL OR EXISTS (
              SELECT 1 FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
              WHERE mt.message_id = m.id AND t.name = :topic::text))
      -- Quoted phrases, checked on the candidates the GIN index found (service/search.py).
      AND m.content ~* ALL (:phrases::text[])
),
page AS (
    SELECT id, conversation_id, user_id, role, content, "timestamp", edited_at, rank
    FROM hit
    WHERE (rank, id) < (coalesce(:before_rank::real, 'Infinity'), coalesce(:before_id::bigint, 9223372036854775807))
    ORDER BY rank DESC, id DESC
    LIMIT :limit
)
SELECT p.id, p.conversation_id, p.user_id, p.role, p.content, p."timestamp", p.edited_at,
       (SELECT coalesce(json_agg(json_build_object('id', t.id, 'name', t.name) ORDER BY t.name), '[]'::json)
        FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
        WHERE mt.message_id = p.id) AS topics,
       p.rank, search_headline(p.content, search_query(:q)) AS highlight
FROM page AS p
ORDER BY p.rank DESC, p.id DESC;

-- name: search_messages_by_recent :many
-- Messages matching :q, newest first by (timestamp, id), keyset after (before_ts, before_id).
WITH page AS (
    SELECT m.id, m.conversation_id, m.user_id, m.role, m.content, m."timestamp", m.edited_at,
           ts_rank_cd(m.search, search_query(:q)) AS rank
    FROM messages AS m
    WHERE m.search @@ search_query(:q)
      AND (:conversation_id::bigint IS NULL OR m.conversation_id = :conversation_id::bigint)
      AND (:user_id::bigint IS NULL OR m.user_id = :user_id::bigint)
      AND (:role::text IS NULL OR m.role = :role::text)
      AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
      AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')
      AND (:topic::text IS NULL OR EXISTS (
              SELECT 1 FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
              WHERE mt.message_id = m.id AND t.name = :topic::text))
      -- Quoted phrases, checked on the candidates the GIN index found (service/search.py).
      AND m.content ~* ALL (:phrases::text[])
      AND m."timestamp" <= coalesce(:before_ts::timestamptz, 'infinity')
      AND (m."timestamp", m.id) < (coalesce(:before_ts::timestamptz, 'infinity'),
                                   coalesce(:before_id::bigint, 9223372036854775807))
    ORDER BY m."timestamp" DESC, m.id DESC
    LIMIT :limit
)
SELECT p.id, p.conversation_id, p.user_id, p.role, p.content, p."timestamp", p.edited_at,
       (SELECT coalesce(json_agg(json_build_object('id', t.id, 'name', t.name) ORDER BY t.name), '[]'::json)
        FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
        WHERE mt.message_id = p.id) AS topics,
       p.rank, search_headline(p.content, search_query(:q)) AS highlight
FROM page AS p
ORDER BY p."timestamp" DESC, p.id DESC;

-- name: search_facets :many
-- Facet counts over ALL messages matching :q and the filters (not only a page), so every page of
-- one search gets the same ones: (facet, value, count) rows; the roles, and the 20 most frequent
-- topics (ties by name). Each facet runs only when asked for (with_roles, with_topics: a false one
-- is pruned at planning, which search plans for its values).
WITH hit AS (
    SELECT m.id, m.role
    FROM messages AS m
    WHERE m.search @@ search_query(:q)
      AND (:conversation_id::bigint IS NULL OR m.conversation_id = :conversation_id::bigint)
      AND (:user_id::bigint IS NULL OR m.user_id = :user_id::bigint)
      AND (:role::text IS NULL OR m.role = :role::text)
      AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
      AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')
      AND (:topic::text IS NULL OR EXISTS (
              SELECT 1 FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
              WHERE mt.message_id = m.id AND t.name = :topic::text))
      AND m.content ~* ALL (:phrases::text[])
)
(SELECT 'role' AS facet, h.role AS value, count(*) AS count
 FROM hit AS h
 WHERE :with_roles::boolean
 GROUP BY h.role
 ORDER BY count DESC, value)
UNION ALL
(SELECT 'topic', t.name, count(*)
 FROM hit AS h
 JOIN message_topics AS mt ON mt.message_id = h.id
 JOIN topics AS t ON t.id = mt.topic_id
 WHERE :with_topics::boolean
 GROUP BY t.name
 ORDER BY count(*) DESC, t.name
 LIMIT 20);

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
