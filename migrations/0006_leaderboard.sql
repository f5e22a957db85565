-- The all-time leaderboard's Postgres side: rebuilding the Redis board, and
-- serving it directly while Redis is down, read users by XP.
CREATE INDEX user_progress_xp ON user_progress (xp DESC, user_id) WHERE xp > 0;
