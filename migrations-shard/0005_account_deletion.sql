-- As migrations/0018_account_deletion.sql on main (its first part).
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
