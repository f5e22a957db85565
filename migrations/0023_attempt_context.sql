-- Everything an attempt reads before it writes, in one round trip (#17).
--
-- Passes the bucket's write fence (with sharding: p_bucket is not NULL), locks
-- the learner's progress row (creating it on their first attempt; the lock
-- serializes one learner's attempts), then reads the progress and the card of
-- this exercise. The card is read by a statement that starts after the lock
-- is held, so it sees what an attempt that held the lock before committed: a
-- single SELECT joining the card to a FOR UPDATE of the progress would read
-- the card from a snapshot taken before the wait.
--
-- Returns one row. When the fence refuses the write, only `fence` is set.
-- Kept identical in migrations-shard/0006_attempt_context.sql.
CREATE FUNCTION attempt_context(p_user uuid, p_exercise bigint, p_timezone text, p_bucket integer)
RETURNS TABLE (
    fence text,
    attempts integer,
    correct integer,
    xp bigint,
    current_streak integer,
    longest_streak integer,
    last_active_day date,
    recent_outcomes integer,
    recent_count smallint,
    today date,
    now timestamptz,
    card_due timestamptz,
    card_stability double precision,
    card_difficulty double precision,
    card_elapsed_days bigint,
    card_scheduled_days bigint,
    card_reps integer,
    card_lapses integer,
    card_state smallint,
    card_last_review timestamptz,
    card_revealed_at timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_fence text := 'owned';
BEGIN
    IF p_bucket IS NOT NULL THEN
        v_fence := shard_write_guard(p_bucket, p_user);
        IF v_fence NOT IN ('owned', 'moving') THEN
            fence := v_fence;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    PERFORM 1 FROM user_progress p WHERE p.user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO user_progress (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM user_progress p WHERE p.user_id = p_user FOR UPDATE;
    END IF;
    RETURN QUERY
        SELECT v_fence, p.attempts, p.correct, p.xp, p.current_streak, p.longest_streak,
               p.last_active_day, p.recent_outcomes, p.recent_count,
               (pg_catalog.now() AT TIME ZONE p_timezone)::date, pg_catalog.now(),
               c.due, c.stability, c.difficulty, c.elapsed_days, c.scheduled_days,
               c.reps, c.lapses, c.state, c.last_review, c.revealed_at
          FROM user_progress p
          LEFT JOIN review_cards c ON c.user_id = p_user AND c.exercise_id = p_exercise
         WHERE p.user_id = p_user;
END
$$;
