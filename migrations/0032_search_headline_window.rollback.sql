-- The highlight of the whole message again (migration 0007's function).
-- depends: 0031_message_topic_ids_backfill
CREATE OR REPLACE FUNCTION search_headline(document text, query tsquery) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ts_headline('english'::regconfig, document, query,
                       'MaxFragments=2, MaxWords=18, MinWords=6, FragmentDelimiter=" … "')
$$;
