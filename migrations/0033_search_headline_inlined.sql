-- search_headline as a plain expression again, so PostgreSQL inlines it into the statements that
-- call it (migration 0032's body held a subquery, which a SQL function cannot be inlined with:
-- every highlight then paid a function call, and the search's ranking statement went from 1.22
-- to 1.35 x the bare SQL returning the same rows). The window of a long message is a function of
-- its own, called only for those. Whether a message is long is read from its size in bytes, which
-- a stored value's header gives without reading (decompressing) the text: more than 5,000 bytes.
-- depends: 0032_search_headline_window

CREATE FUNCTION search_window(document text, query tsquery) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT substr(document, greatest(1, coalesce((
        -- The query's lexemes, as its text quotes them ('it''s' for it's).
        SELECT min(nullif(strpos(lower(document), replace(w.quoted[1], '''''', '''')), 0))
        FROM regexp_matches(query::text, '''((?:[^'']|'''')+)''', 'g') AS w (quoted)
    ), 1) - 1000), 5000)
$$;

CREATE OR REPLACE FUNCTION search_headline(document text, query tsquery) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ts_headline('english'::regconfig,
                       CASE WHEN octet_length(document) <= 5000 THEN document ELSE search_window(document, query) END,
                       query, 'MaxFragments=2, MaxWords=18, MinWords=6, FragmentDelimiter=" … "')
$$;
