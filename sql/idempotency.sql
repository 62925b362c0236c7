-- name: claim_key :val
-- Claims (principal, key) for a new request: true when it is ours to run. An expired row, or one
-- whose first request died without an answer (no status after :abandon_after), is taken over.
INSERT INTO idempotency_keys AS k (principal, key, fingerprint)
VALUES (:principal, :key, :fingerprint)
ON CONFLICT (principal, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, status = NULL, content_type = NULL, body = NULL, created_at = now()
WHERE k.created_at < now() - :ttl::interval
   OR (k.status IS NULL AND k.created_at < now() - :abandon_after::interval)
RETURNING true;

-- name: get_key :one
SELECT fingerprint, status, content_type, body
FROM idempotency_keys
WHERE principal = :principal AND key = :key;

-- name: store_response :exec
UPDATE idempotency_keys
SET status = :status, content_type = :content_type, body = :body
WHERE principal = :principal AND key = :key;

-- name: release_key :exec
-- The first request failed without a definite answer (a 5xx): let a retry run it again.
DELETE FROM idempotency_keys
WHERE principal = :principal AND key = :key AND status IS NULL;

-- name: purge_expired_keys :val
WITH purged AS (
    DELETE FROM idempotency_keys
    WHERE created_at < now() - :ttl::interval
    RETURNING 1
)
SELECT count(*) FROM purged;
