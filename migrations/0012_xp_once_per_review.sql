-- XP is earned once per review interval, and not for typing back an answer
-- that a wrong attempt's feedback has just shown (src/practice/scheduling.rs,
-- `award`). The card already knows when the exercise is due; this is when its
-- answer was last revealed. NULL: never (and every existing card).
ALTER TABLE review_cards ADD COLUMN revealed_at timestamptz;
