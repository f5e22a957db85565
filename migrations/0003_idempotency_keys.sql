-- Idempotency keys for writes a client may retry (attempts, questions, votes).
--
-- The key row is inserted in the same transaction as the write it guards and
-- completed with the response before commit, so "key recorded" and "write
-- done" are one atomic fact: a crash in between leaves neither. A concurrent
-- duplicate blocks on the primary key until the first transaction ends, then
-- sees the stored response (commit) or takes over (rollback) — never a second
-- write. Rows older than 24 hours may be reused and are purged by maintenance.
--
-- user_id leads the key, like every per-user table (shardable by user).
CREATE TABLE idempotency_keys (
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key           text        NOT NULL,
    -- SHA-256 of the method, path and canonical body: the same key with a
    -- different request is refused instead of replayed.
    request_hash  bytea       NOT NULL,
    -- The stored response. NULL only inside the guarding transaction, which
    -- fills them before it commits; other sessions never see NULLs.
    status        smallint,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_key_length CHECK (length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_status_range CHECK (status IS NULL OR status BETWEEN 200 AND 299)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
