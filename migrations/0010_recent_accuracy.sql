-- Recent accuracy: whether each of a learner's last 20 answers counted as
-- correct, kept next to their running totals. The attempt transaction shifts
-- the newest outcome in under the progress row lock
-- (src/practice/adaptive.rs), so choosing the difficulty of new practice reads
-- one row and never scans the attempt history.
--
-- recent_outcomes: bit 0 is the newest answer, a set bit a right one;
-- recent_count: how many answers the bits hold (at most 20).
ALTER TABLE user_progress
    ADD COLUMN recent_outcomes integer  NOT NULL DEFAULT 0,
    ADD COLUMN recent_count    smallint NOT NULL DEFAULT 0,
    ADD CONSTRAINT user_progress_recent CHECK (
        recent_count BETWEEN 0 AND 20
        AND recent_outcomes >= 0
        AND recent_outcomes < (1 << recent_count)
    );

-- Existing learners start from their real last 20 answers (a one-time scan,
-- here in the migration, never on a read).
UPDATE user_progress p
   SET recent_outcomes = r.bits, recent_count = r.n
  FROM (SELECT user_id,
               count(*)::smallint AS n,
               sum(CASE WHEN counts_as_correct THEN 1 << (rn - 1)::int ELSE 0 END)::int AS bits
          FROM (SELECT user_id, counts_as_correct,
                       row_number() OVER (PARTITION BY user_id
                                          ORDER BY created_at DESC, id DESC) AS rn
                  FROM attempts) ranked
         WHERE rn <= 20
         GROUP BY user_id) r
 WHERE r.user_id = p.user_id;
