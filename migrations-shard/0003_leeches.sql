-- As migrations/0016_leeches.sql on main. Leeches: an item a learner has answered wrong LEECH_FAILURES (8) times is
-- suspended from review (src/practice/scheduling.rs) and listed for them
-- (GET /users/me/leeches) until they bring it back (DELETE
-- /users/me/leeches/{exercise_id}).
--
-- failures: wrong answers so far (FSRS's `lapses` counts only forgetting a
-- card in review, not every wrong answer). suspended_at: when it became a
-- leech; NULL while it is reviewed as usual. A constant default adds the
-- column without rewriting the table.
ALTER TABLE review_cards
    ADD COLUMN failures integer NOT NULL DEFAULT 0,
    ADD COLUMN suspended_at timestamptz,
    ADD CONSTRAINT review_cards_failures_nonnegative CHECK (failures >= 0);

-- The learner's leeches, newest first.
CREATE INDEX review_cards_leeches ON review_cards (user_id, suspended_at DESC, exercise_id DESC)
    WHERE suspended_at IS NOT NULL;

-- Existing cards count the wrong answers already given (a one-time scan of
-- the history); an item past the threshold is suspended at its next wrong
-- answer, not behind the learner's back now.
UPDATE review_cards c
   SET failures = f.n
  FROM (SELECT user_id, exercise_id, count(*)::int AS n
          FROM attempts
         WHERE NOT counts_as_correct
         GROUP BY user_id, exercise_id) f
 WHERE f.user_id = c.user_id AND f.exercise_id = c.exercise_id;
