-- Accounts and refresh tokens.
--
-- Emails are stored normalized (trimmed, lower-case) and the database enforces
-- both the normalization and uniqueness: two racing registrations of one address
-- cannot both succeed, whatever the application checks first.
CREATE TABLE users (
    id             uuid        PRIMARY KEY,            -- UUIDv7, made by the service
    email          text        NOT NULL,
    password_hash  text        NOT NULL,               -- argon2id PHC string
    display_name   text        NOT NULL,
    role           text        NOT NULL DEFAULT 'member',
    timezone       text        NOT NULL DEFAULT 'UTC', -- for streaks in the learner's day
    is_active      boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_normalized CHECK (email = lower(btrim(email)) AND length(email) BETWEEN 3 AND 254),
    CONSTRAINT users_role_known CHECK (role IN ('member', 'candidate', 'moderator', 'admin')),
    CONSTRAINT users_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 60)
);

-- Refresh tokens are opaque random values; only their SHA-256 is stored, so a
-- database leak does not leak usable tokens. The tokens of one login form a
-- family: each refresh marks the presented token used and issues the next one.
-- Presenting a used token again means it was stolen or replayed, and the whole
-- family is revoked. Revocation lives on the family row, and every rotation
-- locks that row first, so a replay racing a legitimate refresh cannot leave a
-- freshly issued token alive.
--
-- user_id leads every key: each lookup knows the user (the token carries it),
-- which keeps these tables shardable by user.
CREATE TABLE refresh_families (
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id          uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (user_id, id)
);

CREATE TABLE refresh_tokens (
    user_id     uuid        NOT NULL,
    token_hash  bytea       NOT NULL,
    family_id   uuid        NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (user_id, token_hash),
    FOREIGN KEY (user_id, family_id) REFERENCES refresh_families (user_id, id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_hash_length CHECK (octet_length(token_hash) = 32)
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (user_id, family_id);
-- For purging expired tokens.
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);
