-- name: create_user :one
-- A new user; the email is stored lower-cased so the unique index compares case-insensitively.
INSERT INTO users (email, name)
VALUES (lower(:email), :name)
RETURNING id, email, name, created_at;

-- name: get_user :one
SELECT id, email, name, created_at
FROM users
WHERE id = :user_id;

-- name: find_users_by_email :many
-- Zero or one user: emails are unique once lower-cased.
SELECT id, email, name, created_at
FROM users
WHERE email = lower(:email);

-- name: update_user :one
-- Changes only the fields given (NULL keeps the stored value); no row when the user is unknown.
UPDATE users
SET email = coalesce(lower(:email::text), email),
    name = coalesce(:name::text, name)
WHERE id = :user_id
RETURNING id, email, name, created_at;

-- name: lock_conversations_of_user :exec
-- An erasure's first statement: the conversations it deletes (the user's) or recounts (those the
-- user wrote in), locked in id order before any message and before the user. A post locks its
-- conversation and then, checking its foreign key, the user: an erasure that deleted the user
-- first and reached that conversation through the cascade could deadlock with it. (A row of the
-- user's committed after this statement is not among them: README, "When the database goes away".)
-- ANY of an array the subquery builds once, not IN (subquery): PostgreSQL then finds both sets
-- with their indexes (a BitmapOr), where IN would filter a walk of the whole table.
SELECT FROM conversations AS c
WHERE c.user_id = :user_id
   OR c.id = ANY (ARRAY(SELECT m.conversation_id FROM messages AS m WHERE m.user_id = :user_id))
ORDER BY c.id
FOR UPDATE;

-- name: lock_messages_of_user :exec
-- Then the messages it deletes, in id order, as a bulk edit or a topic assignment locks theirs
-- (the cascade deletes them in the order its scans find them).
SELECT FROM messages AS m
WHERE m.user_id = :user_id
   OR m.conversation_id = ANY (ARRAY(SELECT c.id FROM conversations AS c WHERE c.user_id = :user_id))
ORDER BY m.id
FOR UPDATE;

-- name: delete_user :val
-- Cascades to the user's conversations, their messages and their tags. After
-- lock_conversations_of_user and lock_messages_of_user.
DELETE FROM users
WHERE id = :user_id
RETURNING id;
