-- Idempotency keys of the HTTP intake (POST /v1/kicks with an Idempotency-Key header): a retried request with
-- the same key and body within 24 hours answers the job ids of the first, publishing nothing again. Rows older
-- than 24 hours are ignored, and deleted by the next insert (see src/ledger/idempotency.rs).
CREATE TABLE http_idempotency (
    namespace   text        NOT NULL,
    key         text        NOT NULL,
    body_sha256 bytea       NOT NULL,
    job_ids     text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key)
);

-- Serves the prune on insert (created_at < cutoff).
CREATE INDEX http_idempotency_created_at ON http_idempotency (created_at);
