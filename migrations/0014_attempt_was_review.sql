-- Whether an attempt reviewed an item the learner had practised before (true)
-- or met a new one (false), recorded when the attempt is written (the card
-- existed or not). Review statistics (GET /users/me/reviews/stats) count
-- retention over reviews and new items per day from it, with a range scan of
-- the window instead of each item's whole history. NULL: written before this
-- column existed (counted as attempts, neither new nor review).
--
-- Nullable without a default: no table rewrite, on any partition.
ALTER TABLE attempts ADD COLUMN was_review boolean;
