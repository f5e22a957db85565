-- Account deletion in steps (src/auth/erase.rs): the account is deactivated
-- and marked first, so that a deletion interrupted midway (an instance dies,
-- a step fails) is finished by a retry or the maintenance round, never
-- forgotten, and an administrator cannot reactivate it meanwhile.
ALTER TABLE users ADD COLUMN deleting_since timestamptz;

CREATE INDEX users_deleting ON users (deleting_since) WHERE deleting_since IS NOT NULL;

-- A deletion finds the account's flags (the key leads with the question).
CREATE INDEX question_flags_user ON question_flags (user_id);
