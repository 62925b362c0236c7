-- name: claim_key :val
-- Claims (principal, key) for a new request: true when it is ours to run, no row when an answer
-- is stored already. Runs first in the request's own transaction: a concurrent request with the
-- same key waits here on the uncommitted row until the first commits (then finds its answer) or
-- rolls back (then claims it). A row past its lifetime is taken over.
INSERT INTO idempotency_keys AS k (principal, key, fingerprint)
VALUES (:principal, :key, :fingerprint)
ON CONFLICT (principal, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, status = NULL, content_type = NULL, body = NULL, created_at = now()
WHERE k.created_at < now() - :ttl::interval
RETURNING true;

-- name: get_key :one
SELECT fingerprint, status, content_type, body
FROM idempotency_keys
WHERE principal = :principal AND key = :key;

-- name: store_response :exec
UPDATE idempotency_keys
SET status = :status, content_type = :content_type, body = :body
WHERE principal = :principal AND key = :key;

-- name: purge_expired_keys :val
WITH purged AS (
    DELETE FROM idempotency_keys
    WHERE created_at < now() - :ttl::interval
    RETURNING 1
)
SELECT count(*) FROM purged;
