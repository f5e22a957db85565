-- Achievements a learner has earned (defined in src/practice/achievements.rs;
-- the id is that definition's key). Awarded in the attempt's transaction, at
-- most once per learner (the primary key), whatever retries or concurrent
-- attempts do. A per-user table: on main as on every shard
-- (migrations-shard/0004_achievements.sql).
CREATE TABLE user_achievements (
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    achievement  text        NOT NULL,
    earned_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, achievement),
    CONSTRAINT user_achievements_id_shape CHECK (achievement ~ '^[a-z0-9_]{1,64}$')
);
