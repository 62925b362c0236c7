-- What the chat API needs beyond the guide's schema:
-- depends: 0003_message_role
--
-- * messages.edited_at (set by PATCH) and messages.client_msg_id (the caller's idempotency key
--   for a message, unique per conversation through the index of 0005). Both nullable: adding
--   them is a catalogue change, no table rewrite.
-- * topic_ids(names): get-or-create topics by name, safe when two transactions create the same
--   name at once. INSERT … ON CONFLICT DO NOTHING waits for the other transaction and skips its
--   row; the SELECT that follows is a new statement in a VOLATILE function, so it sees the row
--   the other transaction committed. (A single-statement CTE would not: its snapshot predates it.)
-- * conversations.message_count and updated_at kept by statement-level triggers, so every path
--   that adds or removes messages (the API, bulk writes, cascades from deleting a user) keeps
--   them right, in the same transaction, at one UPDATE per statement rather than per row.

SET LOCAL lock_timeout = '10s';

ALTER TABLE messages
    ADD COLUMN edited_at timestamptz,
    ADD COLUMN client_msg_id text CONSTRAINT messages_client_msg_id_length CHECK (length(client_msg_id) BETWEEN 1 AND 200);

CREATE FUNCTION topic_ids(names text[]) RETURNS TABLE (id bigint, name text)
LANGUAGE sql VOLATILE AS $$
    -- Only names not seen yet reach the INSERT: no speculative insertion, no identity value
    -- spent, for the common case of topics that exist.
    INSERT INTO topics (name)
    SELECT DISTINCT wanted FROM unnest(names) AS wanted
    WHERE NOT EXISTS (SELECT 1 FROM topics AS t WHERE t.name = wanted)
    ON CONFLICT (name) DO NOTHING;
    SELECT t.id, t.name FROM topics AS t WHERE t.name = ANY (names);
$$;

CREATE FUNCTION count_added_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations AS c
    SET message_count = c.message_count + added.n,
        updated_at = greatest(c.updated_at, added.latest)
    FROM (
        SELECT conversation_id, count(*) AS n, max("timestamp") AS latest
        FROM new_messages
        GROUP BY conversation_id
    ) AS added
    WHERE c.id = added.conversation_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION count_removed_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- When the conversation itself is being deleted, its row is already gone: nothing to update.
    UPDATE conversations AS c
    SET message_count = c.message_count - removed.n
    FROM (
        SELECT conversation_id, count(*) AS n
        FROM old_messages
        GROUP BY conversation_id
    ) AS removed
    WHERE c.id = removed.conversation_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_counted_on_insert
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION count_added_messages();

CREATE TRIGGER messages_counted_on_delete
    AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_messages
    FOR EACH STATEMENT EXECUTE FUNCTION count_removed_messages();

-- Messages written before the triggers existed.
UPDATE conversations AS c
SET message_count = counted.n,
    updated_at = greatest(c.updated_at, counted.latest)
FROM (
    SELECT conversation_id, count(*) AS n, max("timestamp") AS latest
    FROM messages
    GROUP BY conversation_id
) AS counted
WHERE c.id = counted.conversation_id;
