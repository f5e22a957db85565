-- The moderators' queue (GET /api/v1/moderation/questions): questions by
-- moderation status, newest first, with keyset pagination on
-- (created_at, id). Both indexes are partial, so the bulk of questions —
-- visible and unflagged — costs them nothing. The handler writes each status
-- as a literal (never a parameter) so that the planner can match these
-- predicates.
CREATE INDEX questions_moderation ON questions (status, created_at DESC, id DESC)
    WHERE status <> 'visible';

-- Visible questions that carry flags but not yet enough to be hidden.
CREATE INDEX questions_flagged ON questions (created_at DESC, id DESC)
    WHERE status = 'visible' AND flag_count > 0;

-- The audit log (GET /api/v1/moderation/log) pages newest first on its
-- primary key; one question's history uses moderation_log_question.
