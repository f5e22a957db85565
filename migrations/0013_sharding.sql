-- Stage 4: per-user sharding (src/db/shards.rs, docs/sharding.md).
--
-- Per-user rows (attempts, review cards, progress, skill stats, weekly XP and
-- the idempotency keys of per-user writes) live on the user's shard; `main`
-- (this database) is a shard too, and with no SHARD_URLS configured it is the
-- only one. A user's shard is found through one of 1,024 virtual buckets:
-- bucket = the first two bytes of SHA-256(user id) mod 1024 (the same
-- function in Rust: `db::shards::bucket_of`), and the bucket's shard is in
-- `shard_map` (no row: `main`). Moving a bucket moves its users' rows and
-- flips one row here.

CREATE FUNCTION shard_bucket(id uuid) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ((get_byte(sha256(uuid_send(id)), 0) << 8) | get_byte(sha256(uuid_send(id)), 1)) % 1024;

-- A bucket move enumerates the bucket's users from here.
CREATE INDEX users_shard_bucket ON users (shard_bucket(id));

CREATE TABLE shard_map (
    bucket    integer     PRIMARY KEY,
    shard     text        NOT NULL,
    moved_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT shard_map_bucket_range CHECK (bucket BETWEEN 0 AND 1023),
    CONSTRAINT shard_map_shard_name CHECK (shard ~ '^[a-z0-9][a-z0-9-]{0,31}$')
);

-- A bucket move in progress (`refbackend shards move`), so a crashed move can
-- be resumed: `copying` until the map flips, `flipped` until the old copy is
-- deleted; the row is removed when the move is done.
CREATE TABLE shard_moves (
    bucket      integer     PRIMARY KEY,
    source      text        NOT NULL,
    target      text        NOT NULL,
    phase       text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT shard_moves_bucket_range CHECK (bucket BETWEEN 0 AND 1023),
    CONSTRAINT shard_moves_phase_known CHECK (phase IN ('copying', 'flipped')),
    CONSTRAINT shard_moves_two_shards CHECK (source <> target)
);

-- The write fence, on every database that holds per-user rows (here and in
-- migrations-shard/). Every per-user write transaction calls
-- shard_write_guard(bucket, user) first (when sharding is configured): it
-- takes the bucket's advisory lock in shared mode and reports the bucket's
-- state on this database:
--   owned   no fence: write here;
--   moving  a move is copying the bucket away: write here, and the user is
--           recorded in shard_move_dirty so the move copies them again;
--   moved   the bucket lives elsewhere now: write nothing (the caller rolls
--           back, reloads the map and answers 503 with Retry-After).
-- The mover takes the same lock in exclusive mode to set the fence, so no
-- write is ever half on either side of it, whatever an instance's copy of the
-- map says. The statements run in a function so that the fence is read with a
-- snapshot taken after the lock was granted.
CREATE TABLE shard_fence (
    bucket  integer PRIMARY KEY,
    state   text    NOT NULL,
    CONSTRAINT shard_fence_bucket_range CHECK (bucket BETWEEN 0 AND 1023),
    CONSTRAINT shard_fence_state_known CHECK (state IN ('moving', 'moved'))
);

CREATE TABLE shard_move_dirty (
    bucket   integer NOT NULL,
    user_id  uuid    NOT NULL,
    PRIMARY KEY (bucket, user_id)
);

CREATE FUNCTION shard_write_guard(p_bucket integer, p_user uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    fence text;
BEGIN
    -- 21320 ('SH'): the advisory-lock class of bucket fences.
    PERFORM pg_advisory_xact_lock_shared(21320, p_bucket);
    SELECT state INTO fence FROM shard_fence WHERE bucket = p_bucket;
    IF fence = 'moving' THEN
        INSERT INTO shard_move_dirty (bucket, user_id) VALUES (p_bucket, p_user)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN coalesce(fence, 'owned');
END
$$;
