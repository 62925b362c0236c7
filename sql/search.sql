-- name: plan_for_these_values :val
-- Searches differ too much for one plan: a rare word wants the GIN index, a word in 5% of all
-- messages the newest messages first. Called first in the search's transaction, this makes
-- PostgreSQL plan the next statements for their actual values instead of reusing the generic
-- plan of the prepared statement. random_page_cost 1.1 (the default 4 models disks that seek)
-- says the rows a GIN index points to are in memory: otherwise, for a common word in a large
-- conversation, the planner walks the whole conversation's btree and tests every message rather
-- than fetching the matches idx_message_search finds (measured: 50,000 rows against 2,500).
SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('random_page_cost', '1.1', true);

-- fragment: matching_messages
-- The live messages matching :q (web-search syntax, on the stored messages.search; deleted ones
-- are in the index until purged and filtered out here) and the optional filters, NULL when
-- not given. Run after plan_for_these_values, so each search is planned for
-- its own filters.
m.search @@ search_query(:q)
      AND m.deleted_at IS NULL
      -- filter_scope, the service's choice (service/search.py's filter_by_scope), is a constant
      -- in a custom plan: true when the scope holds more messages than q matches, which are then
      -- found by q alone and filtered here ("+ 0" keeps the column out of the index condition);
      -- false lets idx_message_search AND the scope's entries with q's.
      AND (:conversation_id::bigint IS NULL
           OR CASE WHEN :filter_scope::boolean THEN m.conversation_id + 0 ELSE m.conversation_id END
              = :conversation_id::bigint)
      AND (:user_id::bigint IS NULL
           OR CASE WHEN :filter_scope::boolean THEN m.user_id + 0 ELSE m.user_id END = :user_id::bigint)
      AND (:role::text IS NULL OR m.role = :role::text)
      AND m."timestamp" >= coalesce(:since::timestamptz, '-infinity')
      AND m."timestamp" < coalesce(:until::timestamptz, 'infinity')
      AND (:topic::text IS NULL OR EXISTS (
              SELECT 1 FROM message_topics AS mt JOIN topics AS t ON t.id = mt.topic_id
              WHERE mt.message_id = m.id AND t.name = :topic::text))
      -- Quoted phrases (service/search.py's phrase_patterns), checked on the candidates the GIN
      -- index found: websearch_to_tsquery drops their stop words.
      AND m.content ~* ALL (:phrases::text[])

-- fragment: ranked_columns
-- What a ranked set carries of each match: the message (messages.message_fields) and its rank,
-- scored once. The page is taken from the set as it is: looking its rows up again by id cost
-- about as many buffers as finding the set (a rare word's: 84 of 160).
/*include messages.message_fields*/, ts_rank_cd(m.search, search_query(:q)) AS rank

-- fragment: rank_the_set
-- The page of a ranked search, from its ranked_set (ranked_columns): best first by rank, ties by
-- id, keyset after (before_rank, before_id). The first row always exists: the set's size and
-- newest id, then the page's message (NULLs when the page is empty), its rank, its ts_headline
-- and its topic ids (service/topic_lists.py names them). Only the page's rows get a headline: not
-- the set's others, nor the row past the page that says one more follows.
summary AS (
    SELECT count(*) AS ranked, max(r.id) AS newest FROM ranked_set AS r
),
page AS (
    SELECT r.*, row_number() OVER (ORDER BY r.rank DESC, r.id DESC) AS place
    FROM (SELECT r.*
          FROM ranked_set AS r
          WHERE (r.rank, r.id)
                < (coalesce(:before_rank::real, 'Infinity'), coalesce(:before_id::bigint, 9223372036854775807))
          ORDER BY r.rank DESC, r.id DESC
          LIMIT :limit::integer + 1 OFFSET :offset) AS r
)
SELECT s.ranked, s.newest, /*include messages.message_columns*/, m.rank,
       CASE WHEN m.place <= :limit::integer THEN search_headline(m.content, search_query(:q)) END AS highlight,
       m.topic_ids
FROM summary AS s
LEFT JOIN page AS m ON true
ORDER BY m.rank DESC, m.id DESC

-- name: search_messages_by_rank :many
-- Matching messages, best first, ranked within a bounded set: the newest :window matches (by id,
-- the order messages were stored in) with id <= :newest. Ranking must score every message it
-- ranks, so an unbounded ranking of a word in 5% of a million messages reads 50,000 rows per page;
-- the set costs what its matches cost. This statement is for searches with fewer matches than
-- search_messages_by_rank_common's: all of them come from idx_message_search (the word's entries,
-- ANDed with the user's or the conversation's for a scoped search), newest :window by id.
-- "id + 0" keeps the planner from walking messages_pkey down an unknown distance instead.
-- The first page passes :newest NULL and reads the set's newest id from the first row; later pages
-- pass it back (it travels in the cursor), so every page ranks the same set while new messages
-- arrive, and the keyset (before_rank, before_id) returns each of its items exactly once.
WITH ranked_set AS MATERIALIZED (
    SELECT /*include ranked_columns*/
    FROM messages AS m
    WHERE /*include matching_messages*/
      AND m.id <= coalesce(:newest::bigint, 9223372036854775807)
    ORDER BY m.id + 0 DESC
    LIMIT :window::integer
),
/*include rank_the_set*/;

-- name: search_messages_by_rank_common :many
-- search_messages_by_rank for a search with many matches (a common word): the same set, looked for
-- in two steps, so that it costs about :window matches rather than all of them.
--   recent  the newest :recent_ids messages, walked down messages_pkey from :newest, stopping at
--           the :window-th match (after 20,000 rows for a word in 5% of messages). Bounded by
--           :recent_ids even for a word the statistics call common that is not used lately.
--   older   only when recent did not fill the set (its gate is evaluated once, before the scan):
--           the rest from the older matches, found in idx_message_search.
WITH newest_messages AS NOT MATERIALIZED (
    SELECT w.*
    FROM messages AS w
    WHERE w.id <= coalesce(:newest::bigint, 9223372036854775807)
    ORDER BY w.id DESC
    LIMIT :recent_ids::integer
),
recent AS MATERIALIZED (
    SELECT /*include ranked_columns*/
    FROM newest_messages AS m
    WHERE /*include matching_messages*/
    ORDER BY m.id DESC
    LIMIT :window::integer
),
older AS MATERIALIZED (
    SELECT /*include ranked_columns*/
    FROM messages AS m
    WHERE (SELECT count(*) FROM recent) < :window::integer
      AND /*include matching_messages*/
      AND m.id + 0 < (SELECT min(n.id) FROM newest_messages AS n)
    ORDER BY m.id + 0 DESC
    LIMIT :window::integer - (SELECT count(*) FROM recent)
),
ranked_set AS (
    SELECT r.* FROM recent AS r
    UNION ALL
    SELECT o.* FROM older AS o
),
/*include rank_the_set*/;

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
SELECT /*include messages.message_columns*/, p.rank, search_headline(m.content, search_query(:q)) AS highlight,
       m.topic_ids
FROM page AS p
JOIN messages AS m ON m.id = p.id
ORDER BY p."timestamp" DESC, p.id DESC;

-- name: scope_and_matches :one
-- Only planned, never run (service/search.py's filter_by_scope): PostgreSQL's estimates of how many
-- messages the scope (a user's, a conversation's) holds and how many match :q, from its statistics.
SELECT (SELECT count(*) FROM messages AS m
        WHERE (:conversation_id::bigint IS NULL OR m.conversation_id = :conversation_id::bigint)
          AND (:user_id::bigint IS NULL OR m.user_id = :user_id::bigint)) AS scope,
       (SELECT count(*) FROM messages AS m WHERE m.search @@ search_query(:q)) AS matches;

-- name: count_matching_messages :val
SELECT count(*)
FROM messages AS m
WHERE /*include matching_messages*/;

-- name: search_facets :many
-- Facet counts over ALL the matching messages (not only a page), so every page of one search
-- gets the same ones: (facet, value, count) rows; the roles, and the 20 most frequent topics
-- (ties by name). Each facet runs only when asked for (with_roles, with_topics: a false one is
-- pruned at planning, which searches do for their own values).
WITH hit AS (
    SELECT m.id, m.role
    FROM messages AS m
    WHERE /*include matching_messages*/
)
(SELECT 'role' AS facet, h.role AS value, count(*) AS count
 FROM hit AS h
 WHERE :with_roles::boolean
 GROUP BY h.role
 ORDER BY count(*) DESC, h.role)
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
