-- CivicQ ballot: elections of a city, the contests on each (an office with a
-- number of seats, or a measure), and the candidate profiles running in each
-- contest. Public, admin-maintained reference data on main (not per-user, so
-- not sharded). A profile may be linked to the account (role candidate) that
-- speaks for it; that link decides who may answer which questions
-- (src/civic/ballot.rs).
--
-- A contest never changes election and an election never changes city, so a
-- question's contest stays a contest of the question's city.

CREATE TABLE elections (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    city_id        bigint      NOT NULL REFERENCES cities (id),
    name           text        NOT NULL,
    election_date  date        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT elections_name_length CHECK (char_length(name) BETWEEN 1 AND 120),
    -- The same election entered twice is a mistake (and makes seeding idempotent).
    CONSTRAINT elections_city_date_name_key UNIQUE (city_id, election_date, name)
);

-- A city's ballot: its elections by date (the unique key above leads with
-- the city and the date, so it serves that too).

CREATE TABLE contests (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    election_id  bigint      NOT NULL REFERENCES elections (id),
    -- office: candidates run for `seats` seats; measure: a yes/no question,
    -- whose profiles are the campaigns for and against it.
    kind         text        NOT NULL,
    title        text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    seats        integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contests_kind_known CHECK (kind IN ('office', 'measure')),
    CONSTRAINT contests_seats_by_kind CHECK (
        (kind = 'office' AND seats IS NOT NULL AND seats >= 1)
        OR (kind = 'measure' AND seats IS NULL)),
    CONSTRAINT contests_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT contests_description_length CHECK (char_length(description) <= 5000),
    CONSTRAINT contests_election_title_key UNIQUE (election_id, title)
);

CREATE TABLE candidate_profiles (
    -- UUIDv7: the id answers and rebuttals record.
    id            uuid        PRIMARY KEY,
    contest_id    bigint      NOT NULL REFERENCES contests (id),
    -- The account that speaks for this profile. A deleted account leaves the
    -- profile (it is ballot information) unlinked.
    user_id       uuid        REFERENCES users (id) ON DELETE SET NULL,
    display_name  text        NOT NULL,
    bio           text        NOT NULL DEFAULT '',
    -- At most 5 https URLs (checked by the API: src/http/ballot.rs).
    links         text[]      NOT NULL DEFAULT '{}',
    -- Set by administrators only.
    verified      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT candidate_profiles_name_length CHECK (char_length(display_name) BETWEEN 1 AND 120),
    CONSTRAINT candidate_profiles_bio_length CHECK (char_length(bio) <= 2000),
    CONSTRAINT candidate_profiles_links_count CHECK (cardinality(links) <= 5),
    -- One profile per account per contest (unlinked profiles: any number).
    CONSTRAINT candidate_profiles_one_per_user UNIQUE (contest_id, user_id)
);

-- A contest's candidates, by name (keyset pagination on (display_name, id)).
CREATE INDEX candidate_profiles_contest_name ON candidate_profiles (contest_id, display_name, id);
-- Who may answer: an account's profiles (and account deletion unlinks them).
CREATE INDEX candidate_profiles_user ON candidate_profiles (user_id) WHERE user_id IS NOT NULL;

-- A question may target one contest (of an election of its city; the API
-- checks the city). Lists of a contest's questions use their own partial
-- indexes, which cost nothing for questions without a contest.
ALTER TABLE questions ADD COLUMN contest_id bigint REFERENCES contests (id);

CREATE INDEX questions_contest_new ON questions (contest_id, created_at DESC, id DESC)
    WHERE status = 'visible' AND contest_id IS NOT NULL;
CREATE INDEX questions_contest_top ON questions (contest_id, score DESC, created_at DESC, id DESC)
    WHERE status = 'visible' AND contest_id IS NOT NULL;
CREATE INDEX questions_contest_hot ON questions (contest_id, hot DESC, id DESC)
    WHERE status = 'visible' AND contest_id IS NOT NULL;

-- The profile an answer was given as (null for answers older than profiles).
ALTER TABLE answers ADD COLUMN profile_id uuid REFERENCES candidate_profiles (id);

-- Rebuttals: a candidate's one reply to another candidate's answer, when
-- both run in the same contest (src/civic/ballot.rs). They go with the
-- answer (cascade) and with their author's account (src/auth/erase.rs).
CREATE TABLE rebuttals (
    id          uuid        PRIMARY KEY,
    answer_id   uuid        NOT NULL REFERENCES answers (id) ON DELETE CASCADE,
    author_id   uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    profile_id  uuid        NOT NULL REFERENCES candidate_profiles (id),
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rebuttals_body_length CHECK (char_length(body) BETWEEN 1 AND 2000),
    -- One rebuttal per candidate per answer; also the page order of an
    -- answer's rebuttals is served by rebuttals_answer_created.
    CONSTRAINT rebuttals_one_per_candidate UNIQUE (answer_id, author_id)
);

CREATE INDEX rebuttals_answer_created ON rebuttals (answer_id, created_at, id);
CREATE INDEX rebuttals_author ON rebuttals (author_id);
