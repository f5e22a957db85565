-- A shard: a database that holds the per-user rows of the users whose bucket
-- maps to it (migrations/0013_sharding.sql explains buckets and the map).
--
-- The per-user tables are defined exactly as on `main` (tests/it/shards.rs
-- compares the two schemas column by column, constraint by constraint), except
-- that there is no `users` table here to reference: accounts stay on `main`.
-- `exercises` is a read-only copy of main's reference table, kept in step by
-- `refbackend seed` and `refbackend migrate` (src/db/shards.rs,
-- `sync_reference`), so that a learner's history and review queue join their
-- exercises on the shard, in one statement, as they do on `main`.

CREATE FUNCTION shard_bucket(id uuid) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ((get_byte(sha256(uuid_send(id)), 0) << 8) | get_byte(sha256(uuid_send(id)), 1)) % 1024;

CREATE TABLE exercises (
    id            bigint      PRIMARY KEY,
    slug          text        NOT NULL,
    kind          text        NOT NULL,
    prompt        text        NOT NULL,
    instructions  text        NOT NULL,
    infinitive    text        NOT NULL,
    person        text        NOT NULL,
    tense         text        NOT NULL,
    trigger       text,
    difficulty    smallint    NOT NULL,
    tags          text[]      NOT NULL DEFAULT '{}',
    choices       text[]      NOT NULL DEFAULT '{}',
    answer        text        NOT NULL,
    accepted      text[]      NOT NULL,
    explanation   text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT exercises_slug_key UNIQUE (slug),
    CONSTRAINT exercises_slug_format CHECK (slug ~ '^[a-z0-9-]{1,120}$'),
    CONSTRAINT exercises_kind_known CHECK (kind IN ('conjugation', 'mood_choice', 'trigger_category', 'sequence_of_tenses')),
    CONSTRAINT exercises_person_known CHECK (person IN ('yo', 'tu', 'el', 'nosotros', 'vosotros', 'ellos')),
    CONSTRAINT exercises_difficulty_range CHECK (difficulty BETWEEN 1 AND 5),
    CONSTRAINT exercises_answer_accepted CHECK (answer = ANY (accepted))
);
CREATE INDEX exercises_kind_id ON exercises (kind, id);
CREATE INDEX exercises_tense_id ON exercises (tense, id);
CREATE INDEX exercises_trigger_id ON exercises (trigger, id) WHERE trigger IS NOT NULL;
CREATE INDEX exercises_infinitive_id ON exercises (infinitive, id);
CREATE INDEX exercises_difficulty_id ON exercises (difficulty, id);

CREATE TABLE idempotency_keys (
    user_id       uuid        NOT NULL,
    key           text        NOT NULL,
    request_hash  bytea       NOT NULL,
    status        smallint,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_key_length CHECK (length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_status_range CHECK (status IS NULL OR status BETWEEN 200 AND 299)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE TABLE attempts (
    user_id            uuid        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    id                 uuid        NOT NULL,
    exercise_id        bigint      NOT NULL REFERENCES exercises (id),
    answer             text        NOT NULL,
    outcome            text        NOT NULL,
    counts_as_correct  boolean     NOT NULL,
    error_category     text,
    duration_ms        integer,
    xp                 integer     NOT NULL,
    PRIMARY KEY (user_id, created_at, id),
    CONSTRAINT attempts_outcome_known CHECK (outcome IN ('correct', 'accent_mismatch', 'incorrect')),
    CONSTRAINT attempts_answer_length CHECK (char_length(answer) BETWEEN 1 AND 200),
    CONSTRAINT attempts_duration_range CHECK (duration_ms IS NULL OR duration_ms BETWEEN 0 AND 3600000),
    CONSTRAINT attempts_xp_range CHECK (xp >= 0)
) PARTITION BY RANGE (created_at);
CREATE TABLE attempts_default PARTITION OF attempts DEFAULT;

CREATE TABLE review_cards (
    user_id         uuid             NOT NULL,
    exercise_id     bigint           NOT NULL REFERENCES exercises (id),
    due             timestamptz      NOT NULL,
    stability       double precision NOT NULL,
    difficulty      double precision NOT NULL,
    elapsed_days    bigint           NOT NULL,
    scheduled_days  bigint           NOT NULL,
    reps            integer          NOT NULL,
    lapses          integer          NOT NULL,
    state           smallint         NOT NULL,
    last_review     timestamptz      NOT NULL,
    revealed_at     timestamptz,
    PRIMARY KEY (user_id, exercise_id)
);
CREATE INDEX review_cards_due ON review_cards (user_id, due);

CREATE TABLE user_progress (
    user_id          uuid        PRIMARY KEY,
    attempts         integer     NOT NULL DEFAULT 0,
    correct          integer     NOT NULL DEFAULT 0,
    xp               bigint      NOT NULL DEFAULT 0,
    current_streak   integer     NOT NULL DEFAULT 0,
    longest_streak   integer     NOT NULL DEFAULT 0,
    last_active_day  date,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    recent_outcomes  integer     NOT NULL DEFAULT 0,
    recent_count     smallint    NOT NULL DEFAULT 0,
    CONSTRAINT user_progress_counts CHECK (correct BETWEEN 0 AND attempts),
    CONSTRAINT user_progress_recent CHECK (
        recent_count BETWEEN 0 AND 20
        AND recent_outcomes >= 0
        AND recent_outcomes < (1 << recent_count)
    )
);
CREATE INDEX user_progress_xp ON user_progress (xp DESC, user_id) WHERE xp > 0;

CREATE TABLE user_skill_stats (
    user_id    uuid    NOT NULL,
    dimension  text    NOT NULL,
    key        text    NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    correct    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, dimension, key),
    CONSTRAINT user_skill_stats_dimension CHECK (dimension IN ('tense', 'trigger')),
    CONSTRAINT user_skill_stats_counts CHECK (correct BETWEEN 0 AND attempts)
);

CREATE TABLE user_weekly_xp (
    user_id  uuid   NOT NULL,
    week     date   NOT NULL,
    xp       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, week),
    CONSTRAINT user_weekly_xp_monday CHECK (extract(isodow FROM week) = 1),
    CONSTRAINT user_weekly_xp_nonnegative CHECK (xp >= 0)
);
CREATE INDEX user_weekly_xp_board ON user_weekly_xp (week, xp DESC, user_id) WHERE xp > 0;

-- The write fence: as in migrations/0013_sharding.sql.
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
    PERFORM pg_advisory_xact_lock_shared(21320, p_bucket);
    SELECT state INTO fence FROM shard_fence WHERE bucket = p_bucket;
    IF fence = 'moving' THEN
        INSERT INTO shard_move_dirty (bucket, user_id) VALUES (p_bucket, p_user)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN coalesce(fence, 'owned');
END
$$;
