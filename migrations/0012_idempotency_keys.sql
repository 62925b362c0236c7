-- Idempotency-Key support: the first response to a (caller, key) is kept and replayed to retries.
-- depends: 0011_topic_name_prefix_index
--
-- status is NULL while the first request still runs (a concurrent retry then gets a 409).
-- fingerprint is a SHA-256 of method, path, query and body: the same key with another request
-- is refused (422). Rows older than FREYA_IDEMPOTENCY_TTL_HOURS are taken over by a new request
-- and purged by `python -m service purge-idempotency-keys`; idx_idempotency_created serves that.

CREATE TABLE idempotency_keys (
    principal     text        NOT NULL,
    key           text        NOT NULL,
    fingerprint   bytea       NOT NULL,
    status        smallint,
    content_type  text,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

CREATE INDEX idx_idempotency_created ON idempotency_keys (created_at);
