-- name: next_ids :one
-- Where generated rows start, so a seed adds to a database that has data already.
SELECT (SELECT coalesce(max(id), 0) + 1 FROM users) AS user_id,
       (SELECT coalesce(max(id), 0) + 1 FROM topics) AS topic_id,
       (SELECT coalesce(max(id), 0) + 1 FROM conversations) AS conversation_id,
       (SELECT coalesce(max(id), 0) + 1 FROM messages) AS message_id;

-- name: existing_topic_names :many
SELECT name
FROM topics
WHERE name = ANY (:names::text[]);

-- name: sync_sequences :one
-- COPY wrote explicit ids: move each identity sequence past them.
SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users)) AS users,
       setval(pg_get_serial_sequence('topics', 'id'), (SELECT max(id) FROM topics)) AS topics,
       setval(pg_get_serial_sequence('conversations', 'id'), (SELECT max(id) FROM conversations)) AS conversations,
       setval(pg_get_serial_sequence('messages', 'id'), (SELECT max(id) FROM messages)) AS messages;
