-- As migrations/0014_attempt_was_review.sql on main.
ALTER TABLE attempts ADD COLUMN was_review boolean;
