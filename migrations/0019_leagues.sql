-- Weekly leagues (src/leagues.rs): each ISO week (UTC, from Monday), the
-- learners active the week before are grouped by tier into cohorts of at
-- most 30, by level; at the next reset the best of each cohort go up a tier
-- and the last go down. Membership spans learners on every shard, so it
-- lives on main; weekly XP stays on the learners' shards (user_weekly_xp).

-- A week whose cohorts are formed; finalized_at: when its results were set.
CREATE TABLE league_weeks (
    week          date        PRIMARY KEY,
    formed_at     timestamptz NOT NULL DEFAULT now(),
    finalized_at  timestamptz,
    CONSTRAINT league_weeks_monday CHECK (extract(isodow FROM week) = 1)
);

CREATE TABLE league_members (
    week        date     NOT NULL REFERENCES league_weeks (week),
    user_id     uuid     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- 0 bronze, 1 silver, 2 gold, 3 platinum, 4 diamond
    tier        smallint NOT NULL,
    cohort      integer  NOT NULL,
    -- Set when the week is finalized.
    final_xp    bigint,
    final_rank  integer,
    outcome     text,
    PRIMARY KEY (week, user_id),
    CONSTRAINT league_members_tier CHECK (tier BETWEEN 0 AND 4),
    CONSTRAINT league_members_cohort CHECK (cohort >= 0),
    CONSTRAINT league_members_outcome CHECK (outcome IN ('promoted', 'stayed', 'demoted'))
);

-- A cohort's members; a learner's latest week (their tier when they return).
CREATE INDEX league_members_cohort_members ON league_members (week, tier, cohort);
CREATE INDEX league_members_user ON league_members (user_id, week DESC);
