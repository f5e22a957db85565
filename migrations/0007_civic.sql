-- CivicQ: questions (partitioned by month), votes, flags, moderation log and
-- candidate answers.

-- Similar-question detection: trigram similarity (contrib) plus full-text
-- search. (pgvector is not assumed.)
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Questions are partitioned by month on created_at, and created_at is the
-- millisecond timestamp embedded in the question's UUIDv7 id: a lookup by id
-- derives the partition key from the id itself (`created_at = $ts AND id = $id`),
-- so it touches one partition. Partitions are created ahead by the service
-- (src/db/partitions.rs); the default partition catches strays.
CREATE TABLE questions (
    created_at   timestamptz NOT NULL,
    id           uuid        NOT NULL,
    city_id      bigint      NOT NULL REFERENCES cities (id),
    author_id    uuid        NOT NULL REFERENCES users (id),
    body         text        NOT NULL,
    tags         text[]      NOT NULL DEFAULT '{}',
    -- visible | hidden (auto-hidden by flags, awaiting a moderator) |
    -- removed | merged (into merged_into)
    status       text        NOT NULL DEFAULT 'visible',
    merged_into  uuid,
    upvotes      integer     NOT NULL DEFAULT 0,
    downvotes    integer     NOT NULL DEFAULT 0,
    score        integer     GENERATED ALWAYS AS (upvotes - downvotes) STORED,
    -- Reddit-style "hot": sign(score) * log10(max(|score|, 1)) + epoch / 45000.
    -- It does not depend on the time of the query, so it is stored and indexed,
    -- and 12.5 hours of age are worth a factor 10 in net votes.
    hot          double precision NOT NULL,
    flag_count   integer     NOT NULL DEFAULT 0,
    answer_count integer     NOT NULL DEFAULT 0,
    search       tsvector    GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,
    PRIMARY KEY (created_at, id),
    CONSTRAINT questions_body_length CHECK (char_length(body) BETWEEN 10 AND 500),
    CONSTRAINT questions_tags_count CHECK (cardinality(tags) <= 5),
    CONSTRAINT questions_status_known CHECK (status IN ('visible', 'hidden', 'removed', 'merged')),
    CONSTRAINT questions_votes_nonnegative CHECK (upvotes >= 0 AND downvotes >= 0)
) PARTITION BY RANGE (created_at);

CREATE TABLE questions_default PARTITION OF questions DEFAULT;

-- Listing a city's questions by each sort (keyset pagination on these keys).
CREATE INDEX questions_city_new ON questions (city_id, created_at DESC, id DESC) WHERE status = 'visible';
CREATE INDEX questions_city_top ON questions (city_id, score DESC, created_at DESC, id DESC) WHERE status = 'visible';
CREATE INDEX questions_city_hot ON questions (city_id, hot DESC, id DESC) WHERE status = 'visible';
CREATE INDEX questions_popular ON questions (hot DESC, id DESC) WHERE status = 'visible';
CREATE INDEX questions_body_trgm ON questions USING gin (body gin_trgm_ops);
CREATE INDEX questions_search ON questions USING gin (search);

-- One vote per user per question, enforced here. The question's counters are
-- updated in the same transaction, under the question's row lock.
CREATE TABLE question_votes (
    question_id  uuid        NOT NULL,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    value        smallint    NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (question_id, user_id),
    CONSTRAINT question_votes_value CHECK (value IN (-1, 1))
);

CREATE INDEX question_votes_user ON question_votes (user_id);

-- One flag per user per question.
CREATE TABLE question_flags (
    question_id  uuid        NOT NULL,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (question_id, user_id),
    CONSTRAINT question_flags_reason_length CHECK (reason IS NULL OR char_length(reason) <= 200)
);

-- Every moderator action, append-only.
CREATE TABLE moderation_log (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    moderator_id  uuid        NOT NULL REFERENCES users (id),
    action        text        NOT NULL,
    question_id   uuid        NOT NULL,
    target_id     uuid,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT moderation_log_action CHECK (action IN ('approve', 'remove', 'merge', 'auto_hide'))
);

CREATE INDEX moderation_log_question ON moderation_log (question_id, created_at);

-- Candidate answers: one per candidate per question, editable with history.
CREATE TABLE answers (
    id            uuid        PRIMARY KEY,
    question_id   uuid        NOT NULL,
    candidate_id  uuid        NOT NULL REFERENCES users (id),
    body          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    revision      integer     NOT NULL DEFAULT 1,
    CONSTRAINT answers_one_per_candidate UNIQUE (question_id, candidate_id),
    CONSTRAINT answers_body_length CHECK (char_length(body) BETWEEN 1 AND 5000)
);

CREATE TABLE answer_revisions (
    answer_id   uuid        NOT NULL REFERENCES answers (id) ON DELETE CASCADE,
    revision    integer     NOT NULL,
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (answer_id, revision)
);
