-- The subjunctive-practice exercise bank.
--
-- Rows are generated deterministically by the service (src/practice/bank.rs)
-- and loaded by `refbackend seed`, which upserts on `slug`: re-seeding adds
-- nothing twice, and ids stay stable across seeds. The answer columns
-- (`answer`, `accepted`, `explanation`) are read only by the answer checker;
-- the public API never returns them.
CREATE TABLE exercises (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug          text        NOT NULL,
    kind          text        NOT NULL,
    prompt        text        NOT NULL,
    instructions  text        NOT NULL,
    infinitive    text        NOT NULL,
    person        text        NOT NULL,
    tense         text        NOT NULL,
    trigger       text,
    difficulty    smallint    NOT NULL,
    tags          text[]      NOT NULL DEFAULT '{}',
    choices       text[]      NOT NULL DEFAULT '{}',
    answer        text        NOT NULL,
    accepted      text[]      NOT NULL,
    explanation   text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT exercises_slug_key UNIQUE (slug),
    CONSTRAINT exercises_slug_format CHECK (slug ~ '^[a-z0-9-]{1,120}$'),
    CONSTRAINT exercises_kind_known CHECK (kind IN ('conjugation', 'mood_choice', 'trigger_category', 'sequence_of_tenses')),
    CONSTRAINT exercises_person_known CHECK (person IN ('yo', 'tu', 'el', 'nosotros', 'vosotros', 'ellos')),
    CONSTRAINT exercises_difficulty_range CHECK (difficulty BETWEEN 1 AND 5),
    CONSTRAINT exercises_answer_accepted CHECK (answer = ANY (accepted))
);

-- Listing filters by one or more of these and pages by id (keyset): each index
-- serves "filter = x ORDER BY id" directly; combinations use the most selective.
CREATE INDEX exercises_kind_id ON exercises (kind, id);
CREATE INDEX exercises_tense_id ON exercises (tense, id);
CREATE INDEX exercises_trigger_id ON exercises (trigger, id) WHERE trigger IS NOT NULL;
CREATE INDEX exercises_infinitive_id ON exercises (infinitive, id);
CREATE INDEX exercises_difficulty_id ON exercises (difficulty, id);
