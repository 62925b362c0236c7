-- The chat-history schema: users, their conversations, the messages in them and the topics
-- tagged onto messages. Plural table names: "user" is a reserved word in PostgreSQL.
--
-- Deleting cascades the way the data is owned: a user takes their conversations and messages
-- along, a conversation its messages, a message or topic its tags.
-- Unique constraints on users.email and topics.name come with the guide's indexes in 0002, so
-- that no index duplicates another.

CREATE TABLE users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Stored lower-cased, so the unique index compares emails case-insensitively.
    email      text        NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 320),
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title         text        CHECK (length(title) <= 500),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Moves when a message is added; kept in the same transaction as the message.
    updated_at    timestamptz NOT NULL DEFAULT now(),
    message_count integer     NOT NULL DEFAULT 0 CHECK (message_count >= 0)
);

CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id bigint      NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content         text        NOT NULL,
    "timestamp"     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE topics (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Primary key (topic_id, message_id) serves "messages of a topic"; the guide's
-- idx_message_topic (message_id, topic_id) serves "topics of a message".
CREATE TABLE message_topics (
    topic_id   bigint NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    message_id bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (topic_id, message_id)
);
