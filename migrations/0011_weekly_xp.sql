-- Weekly XP per learner, for the weekly leaderboard. Weeks are ISO weeks in
-- UTC, keyed by their Monday. Maintained in the attempt transaction like
-- user_progress, so:
-- - each attempt knows the learner's exact weekly total and sets it on the
--   Redis board (ZADD GT: order-independent, never counted twice), instead of
--   adding an increment that a Redis outage or a racing rebuild could lose;
-- - rebuilding or serving the board reads one index range, not a week of
--   attempts.
CREATE TABLE user_weekly_xp (
    user_id  uuid   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    week     date   NOT NULL,
    xp       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, week),
    CONSTRAINT user_weekly_xp_monday CHECK (extract(isodow FROM week) = 1),
    CONSTRAINT user_weekly_xp_nonnegative CHECK (xp >= 0)
);

CREATE INDEX user_weekly_xp_board ON user_weekly_xp (week, xp DESC, user_id) WHERE xp > 0;

-- The weeks learners already practised in (a one-time scan of the history).
INSERT INTO user_weekly_xp (user_id, week, xp)
SELECT user_id, date_trunc('week', created_at AT TIME ZONE 'UTC')::date, sum(xp)
  FROM attempts
 GROUP BY 1, 2;
