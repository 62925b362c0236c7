-- Full-text search, step 1 of 4: the text-search configuration and the messages.search column.
-- depends: 0006_conversation_user_updated_index
--
-- The configuration is chosen here, once: search_vector() and search_query() are the only places
-- that name it, and everything else (trigger, generated column, queries) goes through them.
-- 'english': Freya's conversations are in English today; stemming makes "flights" find "flight"
-- and drops stop words. To change it, replace both functions in a new migration and rebuild
-- messages.search the way migration 0008 fills it.
--
-- messages.search is a plain column kept by a trigger, not a STORED generated column: adding a
-- generated column rewrites the whole table under an ACCESS EXCLUSIVE lock, while adding a
-- nullable column is a catalogue change. 0008 fills existing rows in batches, 0009 indexes it.

SET LOCAL lock_timeout = '10s';

CREATE FUNCTION search_vector(document text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('english'::regconfig, document)
$$;

-- Web-search syntax: "quoted phrases", or, -exclusion. Never raises on user input.
CREATE FUNCTION search_query(query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT websearch_to_tsquery('english'::regconfig, query)
$$;

CREATE FUNCTION search_headline(document text, query tsquery) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ts_headline('english'::regconfig, document, query,
                       'MaxFragments=2, MaxWords=18, MinWords=6, FragmentDelimiter=" … "')
$$;

ALTER TABLE messages ADD COLUMN search tsvector;

CREATE FUNCTION messages_search_refresh() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := search_vector(NEW.content);
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_search_on_write
    BEFORE INSERT OR UPDATE OF content ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_search_refresh();

-- topics is small (names only): a stored generated column is fine there.
ALTER TABLE topics ADD COLUMN search tsvector GENERATED ALWAYS AS (search_vector(name)) STORED;
