-- As migrations/0017_achievements.sql on main (without the reference to
-- users, which live on main only).
CREATE TABLE user_achievements (
    user_id      uuid        NOT NULL,
    achievement  text        NOT NULL,
    earned_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, achievement),
    CONSTRAINT user_achievements_id_shape CHECK (achievement ~ '^[a-z0-9_]{1,64}$')
);
