-- A search hit's highlight reads a bounded part of the message: ts_headline's work grows with
-- the square of the text it is given where the query's words are frequent (a 90,000-character
-- message made of two words took 0.26 s for a two-word query and 3.8 s for forty; a page
-- highlights up to its size of such hits, holding a pooled connection meanwhile). A message of
-- more than 5,000 characters is highlighted in a window of 5,000 that starts 1,000 before the
-- first occurrence of one of the query's lexemes in its text (a lexeme that is a stem, such as
-- "flight" of "flights", occurs in the word; one that is not, such as "happi" of "happy", is not
-- found: the window is then the message's start, and may show no match).
-- depends: 0031_message_topic_ids_backfill

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
