-- Practice settings per learner (GET/PUT /users/me/settings). Account data,
-- like the time zone: on main, read with the account (and cached with it), so
-- an attempt or a practice read needs no extra query. A learner without a row
-- has the defaults (src/practice/settings.rs).
CREATE TABLE user_settings (
    user_id            uuid             PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- New items a day (in the learner's time zone); 0 = reviews only.
    daily_new_limit    integer          NOT NULL DEFAULT 20,
    -- FSRS target recall probability: higher means shorter intervals.
    desired_retention  double precision NOT NULL DEFAULT 0.9,
    -- Tenses to practise (wire keys); NULL = all.
    tenses             text[],
    -- 'warn' or 'strict' for accent-only slips; NULL = the server's default.
    accent_policy      text,
    updated_at         timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT user_settings_daily_new_limit CHECK (daily_new_limit BETWEEN 0 AND 500),
    CONSTRAINT user_settings_desired_retention CHECK (desired_retention BETWEEN 0.7 AND 0.97),
    CONSTRAINT user_settings_tenses CHECK (tenses IS NULL OR cardinality(tenses) BETWEEN 1 AND 8),
    CONSTRAINT user_settings_accent_policy CHECK (accent_policy IN ('warn', 'strict'))
);
