-- Account deletion (DELETE /users/me). Per-user rows go with the account:
-- on main by ON DELETE CASCADE, on a shard by the deletion itself.
-- The write fence also refuses the writes of an account being deleted
-- (DELETE /users/me): its per-user rows are deleted here first, and a
-- request that passed its account check before that cannot write them back.
-- The marker holds only the id; maintenance drops it after an hour, when no
-- request that could have seen the account alive is still running.
CREATE TABLE erased_users (
    user_id    uuid        PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION shard_write_guard(p_bucket integer, p_user uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    fence text;
BEGIN
    -- 21320 ('SH'): the advisory-lock class of bucket fences.
    PERFORM pg_advisory_xact_lock_shared(21320, p_bucket);
    SELECT state INTO fence FROM shard_fence WHERE bucket = p_bucket;
    IF fence = 'moved' THEN
        RETURN fence;
    END IF;
    IF EXISTS (SELECT 1 FROM erased_users WHERE user_id = p_user) THEN
        RETURN 'erased';
    END IF;
    IF fence = 'moving' THEN
        INSERT INTO shard_move_dirty (bucket, user_id) VALUES (p_bucket, p_user)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN coalesce(fence, 'owned');
END
$$;

-- What a deleted account wrote in public stays, shown as written by "Deleted
-- user" (the nil UUID): residents' questions (others voted on them,
-- candidates answered them) and moderators' entries in the audit log (a
-- candidate's answers are deleted with the candidate). That account is made
-- by the first deletion that needs it (src/auth/erase.rs) and is left out of
-- user counts.

-- Finding what an account wrote, to hand it over.
CREATE INDEX questions_author ON questions (author_id);
CREATE INDEX answers_candidate ON answers (candidate_id);
CREATE INDEX moderation_log_moderator ON moderation_log (moderator_id);
