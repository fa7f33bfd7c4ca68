-- The kickq audit ledger: answers "was user U kicked from room R, when, and
-- with which RequestId?". Owned by src/ledger.rs; every write comes from one
-- batched transaction there, so rows of one delivery commit together.
--
-- app_id is bigint because an AppId is a uint32 and int4 stops at 2^31-1.
-- attempt counters are bigint for the same reason (they are u32 in Rust).
-- Free-text columns never hold NUL: the writer replaces it, since PostgreSQL
-- text rejects it and one bad byte must not poison a whole batch.

CREATE TABLE job_receipts (
    id           bigserial   PRIMARY KEY,
    job_id       text        NOT NULL,
    app_id       bigint      NOT NULL CHECK (app_id BETWEEN 0 AND 4294967295),
    room_id      text        NOT NULL,
    user_ids     text[]      NOT NULL,
    reason       text,
    attempts     bigint      NOT NULL CHECK (attempts >= 0),
    redelivered  boolean     NOT NULL,
    received_at  timestamptz NOT NULL
);

-- "Everything about job J".
CREATE INDEX job_receipts_job_id ON job_receipts (job_id);
-- Pruning by time.
CREATE INDEX job_receipts_received_at ON job_receipts (received_at);

CREATE TABLE api_calls (
    id               bigserial   PRIMARY KEY,
    app_id           bigint      NOT NULL CHECK (app_id BETWEEN 0 AND 4294967295),
    room_id          text        NOT NULL,
    user_ids         text[]      NOT NULL,
    reason           text,
    attempt          bigint      NOT NULL CHECK (attempt >= 0),
    -- NULL when no parseable response arrived (see transport_error).
    code             bigint,
    message          text,
    request_id       text,
    -- integer, not smallint: an HTTP status is a u16 and smallint stops at 32767.
    http_status      integer     CHECK (http_status BETWEEN 0 AND 65535),
    transport_error  text,
    -- Truncated to microseconds, the resolution of interval.
    latency          interval    NOT NULL,
    started_at       timestamptz NOT NULL
);

-- Calls for a room, newest first.
CREATE INDEX api_calls_room_started ON api_calls (room_id, started_at DESC);
-- "Which call had RequestId X?" (what ZEGOCLOUD support asks for).
CREATE INDEX api_calls_request_id ON api_calls (request_id) WHERE request_id IS NOT NULL;
-- Pruning by time.
CREATE INDEX api_calls_started_at ON api_calls (started_at);

CREATE TABLE user_outcomes (
    id          bigserial   PRIMARY KEY,
    job_id      text        NOT NULL,
    app_id      bigint      NOT NULL CHECK (app_id BETWEEN 0 AND 4294967295),
    room_id     text        NOT NULL,
    user_id     text        NOT NULL,
    reason      text,
    -- Must match UserOutcome::as_str in src/ledger.rs.
    outcome     text        NOT NULL CONSTRAINT user_outcomes_outcome_check CHECK (outcome IN (
                    'kicked', 'nothing_to_do', 'dead_lettered',
                    'halted_then_resumed', 'skipped', 'retry_scheduled')),
    code        bigint,
    request_id  text,
    detail      text,
    at          timestamptz NOT NULL
);

-- History of a room, newest first; id breaks ties between rows of one instant.
CREATE INDEX user_outcomes_room_at ON user_outcomes (room_id, at DESC, id DESC);
-- History of one user in a room, newest first.
CREATE INDEX user_outcomes_room_user_at ON user_outcomes (room_id, user_id, at DESC, id DESC);
-- "Everything about job J".
CREATE INDEX user_outcomes_job_id ON user_outcomes (job_id);
-- The redelivery lookup (Ledger::kicked_users): partial, so it stays small and
-- the predicate must be spelled exactly as the query spells it.
CREATE INDEX user_outcomes_done ON user_outcomes (job_id, room_id, user_id)
    WHERE outcome IN ('kicked', 'nothing_to_do');
-- Pruning by time.
CREATE INDEX user_outcomes_at ON user_outcomes (at);
