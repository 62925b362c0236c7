-- Back to migration 0032's search_headline, which computes the window itself.
-- depends: 0032_search_headline_window
CREATE OR REPLACE FUNCTION search_headline(document text, query tsquery) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ts_headline('english'::regconfig,
                       CASE WHEN length(document) <= 5000 THEN document
                            ELSE substr(document, greatest(1, coalesce((
                                -- The query's lexemes, as its text quotes them ('it''s' for it's).
                                SELECT min(nullif(strpos(lower(document), replace(w.quoted[1], '''''', '''')), 0))
                                FROM regexp_matches(query::text, '''((?:[^'']|'''')+)''', 'g') AS w (quoted)
                            ), 1) - 1000), 5000) END,
                       query, 'MaxFragments=2, MaxWords=18, MinWords=6, FragmentDelimiter=" … "')
$$;

DROP FUNCTION search_window(text, tsquery);
