-- Practice: attempts (time-partitioned), per-user spaced-repetition cards and
-- the aggregates progress is read from.
--
-- Every table here is per user and has user_id leading its key, so it can be
-- sharded by user without a cross-shard join.

-- One row per submitted answer. Partitioned by quarter on created_at:
-- old quarters can be detached or dropped whole, and a user's recent history
-- only touches the latest partitions. The partitions themselves are created
-- ahead of time by the service (src/db/partitions.rs, `refbackend partitions`),
-- not here; the default partition catches rows no partition covers, and the
-- service reports it when it is not empty.
CREATE TABLE attempts (
    user_id            uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    id                 uuid        NOT NULL,  -- UUIDv7
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

-- Spaced repetition (FSRS) state per (user, exercise): the card as the
-- scheduler left it after the last review. `due` drives "what to review next".
CREATE TABLE review_cards (
    user_id         uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    exercise_id     bigint           NOT NULL REFERENCES exercises (id),
    due             timestamptz      NOT NULL,
    stability       double precision NOT NULL,
    difficulty      double precision NOT NULL,
    elapsed_days    bigint           NOT NULL,
    scheduled_days  bigint           NOT NULL,
    reps            integer          NOT NULL,
    lapses          integer          NOT NULL,
    state           smallint         NOT NULL,  -- 0 new, 1 learning, 2 review, 3 relearning
    last_review     timestamptz      NOT NULL,
    PRIMARY KEY (user_id, exercise_id)
);

CREATE INDEX review_cards_due ON review_cards (user_id, due);

-- Running totals, maintained in the transaction that records each attempt, so
-- reading progress never scans the attempts history.
CREATE TABLE user_progress (
    user_id          uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    attempts         integer     NOT NULL DEFAULT 0,
    correct          integer     NOT NULL DEFAULT 0,
    xp               bigint      NOT NULL DEFAULT 0,
    current_streak   integer     NOT NULL DEFAULT 0,
    longest_streak   integer     NOT NULL DEFAULT 0,
    -- The last day (in the user's time zone) with an attempt.
    last_active_day  date,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_progress_counts CHECK (correct BETWEEN 0 AND attempts)
);

-- Accuracy per skill: dimension 'tense' (a tense key) or 'trigger' (a trigger
-- category key).
CREATE TABLE user_skill_stats (
    user_id    uuid    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    dimension  text    NOT NULL,
    key        text    NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    correct    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, dimension, key),
    CONSTRAINT user_skill_stats_dimension CHECK (dimension IN ('tense', 'trigger')),
    CONSTRAINT user_skill_stats_counts CHECK (correct BETWEEN 0 AND attempts)
);
