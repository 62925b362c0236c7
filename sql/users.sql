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

-- name: delete_user :val
-- Cascades to the user's conversations, their messages and their tags.
DELETE FROM users
WHERE id = :user_id
RETURNING id;
