-- "Active today" (GET /api/v1/admin/stats, `refbackend capacity snapshot`)
-- counts the accounts that signed in or refreshed a session since midnight.
-- Every sign-in and refresh inserts a refresh token, and access tokens live
-- minutes, so anyone using the service appears here; this index makes the
-- count a range scan of today's tokens instead of a scan of the table.
--
-- Plain CREATE INDEX, inside the migration's transaction: CONCURRENTLY would
-- wait for every open snapshot, including the other instances blocked on the
-- migrator's advisory lock, which wait for it in turn (a deadlock).
CREATE INDEX refresh_tokens_issued_idx ON refresh_tokens (issued_at);
