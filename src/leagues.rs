//! Weekly leagues: learners compete in cohorts of at most [`COHORT_SIZE`]
//! within a tier (bronze to diamond), for one ISO week (UTC, from Monday).
//!
//! - **Formation** ([`roll`]), once per week, a minute after the reset (so an
//!   attempt of the old week that commits late still counts): the old
//!   week's cohorts get their results (the best fifth of each goes up a tier,
//!   the last fifth and everyone without XP goes down), then every learner
//!   with XP in the old week is placed for the new one, in their new tier
//!   (their last known tier if they skipped weeks, bronze if new), and each
//!   tier is cut into cohorts of learners of similar level (total XP). It
//!   runs in the maintenance round of every instance and on the first league
//!   read of the week; one instance takes the lock (a try-lock: the others
//!   read no shard and show no league until it is done), and it is a no-op
//!   once the week is formed.
//! - **Late joiners** (no XP last week) join when they first look at their
//!   league having earned XP this week: the least full cohort of their tier
//!   with room, or a new one (under a per-tier lock, so no cohort exceeds the
//!   size).
//! - Standings read weekly XP from the learners' shards (at most 30 primary
//!   key lookups per shard); membership lives on main.

use std::collections::HashMap;
use std::ops::Range;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::Db;
use crate::leaderboard::week_bounds;

/// Tier names, lowest first.
pub const TIERS: [&str; 5] = ["bronze", "silver", "gold", "platinum", "diamond"];
const TOP_TIER: i16 = 4;
/// The most learners in one cohort.
pub const COHORT_SIZE: usize = 30;
/// A fifth of a cohort goes up, a fifth goes down (6 of 30).
pub const MOVING_SHARE: usize = 5;
/// How long after Monday 00:00 UTC the week's cohorts are formed.
pub const GRACE: Duration = Duration::minutes(1);
/// Advisory-lock class of league changes: 'LG'.
const LOCK_CLASS: i32 = 19527;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Promoted,
    Stayed,
    Demoted,
}

impl Outcome {
    pub const fn key(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::Stayed => "stayed",
            Outcome::Demoted => "demoted",
        }
    }

    fn from_key(key: Option<&str>) -> Outcome {
        match key {
            Some("promoted") => Outcome::Promoted,
            Some("demoted") => Outcome::Demoted,
            _ => Outcome::Stayed,
        }
    }
}

pub fn next_tier(tier: i16, outcome: Outcome) -> i16 {
    match outcome {
        Outcome::Promoted => (tier + 1).min(TOP_TIER),
        Outcome::Stayed => tier,
        Outcome::Demoted => (tier - 1).max(0),
    }
}

/// One member's place in a cohort: (user, xp, rank from 1, outcome if the
/// week ended now).
pub type Placed = (Uuid, i64, i32, Outcome);

/// Ranks a cohort of `tier` by XP (then id, for a stable order) and says who
/// goes up and down.
pub fn results(tier: i16, members: &[(Uuid, i64)]) -> Vec<Placed> {
    let mut sorted = members.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let n = sorted.len();
    let moving = n / MOVING_SHARE;
    sorted
        .into_iter()
        .zip(1..)
        .map(|((user, xp), rank)| {
            let place = usize::try_from(rank).unwrap_or(usize::MAX);
            let outcome = if place <= moving && xp > 0 && tier < TOP_TIER {
                Outcome::Promoted
            } else if tier > 0 && (xp == 0 || place > n - moving) {
                Outcome::Demoted
            } else {
                Outcome::Stayed
            };
            (user, xp, rank, outcome)
        })
        .collect()
}

/// Cuts `n` learners (in level order) into the fewest cohorts of at most
/// [`COHORT_SIZE`], of sizes differing by at most one.
pub fn cohorts(n: usize) -> Vec<Range<usize>> {
    let k = n.div_ceil(COHORT_SIZE);
    (0..k).map(|i| i * n / k..(i + 1) * n / k).collect()
}

fn week_start(week: NaiveDate) -> DateTime<Utc> {
    week.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// When `week`'s league ends (the next Monday, 00:00 UTC).
pub fn ends_at(week: NaiveDate) -> DateTime<Utc> {
    week_start(week) + Duration::days(7)
}

/// `(user, value)` pairs from every database holding per-user rows; a user
/// read twice (their bucket was moving) keeps the larger value.
async fn per_user_values(
    db: &Db,
    sql: &'static str,
    week: Option<NaiveDate>,
    users: Option<&[Uuid]>,
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let mut out = HashMap::new();
    for shard in db.per_user_dbs() {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(sql)
            .bind(week)
            .bind(users)
            .fetch_all(shard.write())
            .await?;
        for (user, value) in rows {
            let entry = out.entry(user).or_insert(value);
            *entry = (*entry).max(value);
        }
    }
    Ok(out)
}

// Each statement binds (week, users); one of them may be unused (NULL).
/// Everyone with XP in a week (a scan of the week's rows, at the reset).
const ACTIVE_IN_WEEK: &str = "SELECT user_id, xp FROM user_weekly_xp
                               WHERE week = $1 AND $2::uuid[] IS NULL AND xp > 0";
/// Some learners' XP in a week (primary-key lookups).
const MEMBERS_WEEK_XP: &str = "SELECT user_id, xp FROM user_weekly_xp
                                WHERE week = $1 AND user_id = ANY($2)";
/// Some learners' total XP (their level).
const TOTAL_XP: &str = "SELECT user_id, xp FROM user_progress
                         WHERE $1::date IS NULL AND user_id = ANY($2)";

/// Forms the leagues of the week of `now` (finalizing the week before) if it
/// is time and no one has. True if this call formed them.
pub async fn roll(db: &Db, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let week = week_bounds(now).0;
    if now < week_start(week) + GRACE || formed(db, week).await? {
        return Ok(false);
    }
    let previous = week - Duration::days(7);
    // One instance forms the week; the others go on at once (their readers
    // see no league until it is formed) instead of queueing with a
    // connection each and reading every shard for nothing.
    let mut tx = db.write().begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, 0)")
        .bind(LOCK_CLASS)
        .fetch_one(&mut *tx)
        .await?;
    if !mine {
        return Ok(false);
    }
    let already: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM league_weeks WHERE week = $1)")
            .bind(week)
            .fetch_one(&mut *tx)
            .await?;
    if already {
        return Ok(false);
    }
    // The old week is over: its XP, and the levels of who earned some.
    let active = per_user_values(db, ACTIVE_IN_WEEK, Some(previous), None).await?;
    let active_ids: Vec<Uuid> = active.keys().copied().collect();
    let levels = per_user_values(db, TOTAL_XP, None, Some(&active_ids)).await?;

    // Results of the old week's cohorts.
    let members: Vec<(Uuid, i16, i32, Option<String>)> =
        sqlx::query_as("SELECT user_id, tier, cohort, outcome FROM league_members WHERE week = $1")
            .bind(previous)
            .fetch_all(&mut *tx)
            .await?;
    let mut tiers: HashMap<Uuid, i16> = HashMap::new();
    let finalized = members.iter().any(|m| m.3.is_some());
    if finalized {
        for (user, tier, _, outcome) in &members {
            tiers.insert(
                *user,
                next_tier(*tier, Outcome::from_key(outcome.as_deref())),
            );
        }
    } else if !members.is_empty() {
        let mut by_cohort: HashMap<(i16, i32), Vec<(Uuid, i64)>> = HashMap::new();
        for (user, tier, cohort, _) in &members {
            let xp = active.get(user).copied().unwrap_or(0);
            by_cohort
                .entry((*tier, *cohort))
                .or_default()
                .push((*user, xp));
        }
        let (mut ids, mut xps, mut ranks, mut outcomes) = (vec![], vec![], vec![], vec![]);
        for ((tier, _), cohort) in &by_cohort {
            for (user, xp, rank, outcome) in results(*tier, cohort) {
                tiers.insert(user, next_tier(*tier, outcome));
                ids.push(user);
                xps.push(xp);
                ranks.push(rank);
                outcomes.push(outcome.key());
            }
        }
        sqlx::query(
            "UPDATE league_members m
                SET final_xp = r.xp, final_rank = r.rank, outcome = r.outcome
               FROM UNNEST($2::uuid[], $3::int8[], $4::int4[], $5::text[])
                    AS r(user_id, xp, rank, outcome)
              WHERE m.week = $1 AND m.user_id = r.user_id",
        )
        .bind(previous)
        .bind(&ids)
        .bind(&xps)
        .bind(&ranks)
        .bind(&outcomes)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE league_weeks SET finalized_at = now() WHERE week = $1")
            .bind(previous)
            .execute(&mut *tx)
            .await?;
    }

    // Learners who skipped weeks come back in their last known tier.
    let returning: Vec<Uuid> = active_ids
        .iter()
        .filter(|id| !tiers.contains_key(id))
        .copied()
        .collect();
    let last: Vec<(Uuid, i16, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (user_id) user_id, tier, outcome FROM league_members
          WHERE user_id = ANY($1) AND week < $2
          ORDER BY user_id, week DESC",
    )
    .bind(&returning)
    .bind(previous)
    .fetch_all(&mut *tx)
    .await?;
    for (user, tier, outcome) in last {
        tiers.insert(user, next_tier(tier, Outcome::from_key(outcome.as_deref())));
    }

    // Every tier cut into cohorts of similar level.
    let mut by_tier: Vec<Vec<(i64, Uuid)>> = vec![Vec::new(); TIERS.len()];
    for user in &active_ids {
        let tier = tiers.get(user).copied().unwrap_or(0);
        let level = levels.get(user).copied().unwrap_or(0);
        by_tier[usize::try_from(tier).unwrap_or(0)].push((level, *user));
    }
    let (mut ids, mut tier_of, mut cohort_of) = (vec![], vec![], vec![]);
    for (tier, learners) in by_tier.iter_mut().enumerate() {
        learners.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (cohort, range) in cohorts(learners.len()).into_iter().enumerate() {
            for (_, user) in &learners[range] {
                ids.push(*user);
                tier_of.push(i16::try_from(tier).unwrap_or(0));
                cohort_of.push(i32::try_from(cohort).unwrap_or(i32::MAX));
            }
        }
    }
    sqlx::query("INSERT INTO league_weeks (week) VALUES ($1)")
        .bind(week)
        .execute(&mut *tx)
        .await?;
    // Deleted accounts drop out here (the join).
    let placed = sqlx::query(
        "INSERT INTO league_members (week, user_id, tier, cohort)
         SELECT $1, x.user_id, x.tier, x.cohort
           FROM UNNEST($2::uuid[], $3::int2[], $4::int4[]) AS x(user_id, tier, cohort)
           JOIN users u ON u.id = x.user_id",
    )
    .bind(week)
    .bind(&ids)
    .bind(&tier_of)
    .bind(&cohort_of)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    tracing::info!(%week, learners = placed, finalized = %previous, "weekly leagues formed");
    Ok(true)
}

async fn formed(db: &Db, week: NaiveDate) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM league_weeks WHERE week = $1)")
        .bind(week)
        .fetch_one(db.write())
        .await
}

/// One member as the standings show them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub rank: i32,
    pub user_id: Uuid,
    pub display_name: String,
    pub xp: i64,
    /// Where this rank would end the week: `promoted`, `stayed` or `demoted`.
    pub zone: Outcome,
}

/// The caller's league this week.
#[derive(Debug, Serialize, ToSchema)]
pub struct League {
    /// The week's Monday.
    pub week: NaiveDate,
    pub ends_at: DateTime<Utc>,
    /// `bronze`, `silver`, `gold`, `platinum` or `diamond`.
    pub tier: String,
    pub cohort: i32,
    /// How many of the cohort go up (and down) at the reset.
    pub moving: usize,
}

/// How the caller's last week ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastWeek {
    pub tier: String,
    pub rank: Option<i32>,
    pub outcome: Option<Outcome>,
}

#[derive(Debug)]
pub struct Standing {
    pub league: League,
    pub members: Vec<Member>,
    pub me: Option<(i32, i64)>,
    pub last_week: Option<LastWeek>,
}

fn tier_name(tier: i16) -> String {
    TIERS
        .get(usize::try_from(tier).unwrap_or(0))
        .copied()
        .unwrap_or("bronze")
        .to_owned()
}

/// The caller's league this week, joining one if they earned XP this week
/// and have none. None while the week's leagues are forming (the first
/// minute) or before the caller earns XP this week.
pub async fn standing(
    db: &Db,
    user: Uuid,
    week_xp: i64,
    now: DateTime<Utc>,
) -> Result<Option<Standing>, sqlx::Error> {
    let week = week_bounds(now).0;
    if !formed(db, week).await? {
        // The first read of the week forms it if no maintenance round has;
        // a failure here is the round's to retry, not this reader's error.
        if let Err(e) = roll(db, now).await {
            tracing::warn!(error = %e, "could not form this week's leagues");
        }
        if !formed(db, week).await? {
            return Ok(None);
        }
    }
    let Some((tier, cohort)) = membership(db, user, week, week_xp).await? else {
        return Ok(None);
    };
    let people: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT m.user_id, u.display_name FROM league_members m JOIN users u ON u.id = m.user_id
          WHERE m.week = $1 AND m.tier = $2 AND m.cohort = $3",
    )
    .bind(week)
    .bind(tier)
    .bind(cohort)
    .fetch_all(db.write())
    .await?;
    let ids: Vec<Uuid> = people.iter().map(|(id, _)| *id).collect();
    let xp = per_user_values(db, MEMBERS_WEEK_XP, Some(week), Some(&ids)).await?;
    let scored: Vec<(Uuid, i64)> = ids
        .iter()
        .map(|id| (*id, xp.get(id).copied().unwrap_or(0)))
        .collect();
    let placed = results(tier, &scored);
    let me = placed
        .iter()
        .find(|(id, ..)| *id == user)
        .map(|(_, xp, rank, _)| (*rank, *xp));
    let members = placed
        .into_iter()
        .map(|(user_id, xp, rank, zone)| Member {
            rank,
            user_id,
            display_name: people
                .iter()
                .find(|(id, _)| *id == user_id)
                .map(|(_, name)| name.clone())
                .unwrap_or_default(),
            xp,
            zone,
        })
        .collect::<Vec<_>>();
    let last_week: Option<(i16, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT tier, final_rank, outcome FROM league_members WHERE week = $1 AND user_id = $2",
    )
    .bind(week - Duration::days(7))
    .bind(user)
    .fetch_optional(db.write())
    .await?;
    Ok(Some(Standing {
        league: League {
            week,
            ends_at: ends_at(week),
            tier: tier_name(tier),
            cohort,
            moving: members.len() / MOVING_SHARE,
        },
        members,
        me,
        last_week: last_week.map(|(tier, rank, outcome)| LastWeek {
            tier: tier_name(tier),
            rank,
            outcome: outcome.map(|o| Outcome::from_key(Some(&o))),
        }),
    }))
}

/// The caller's (tier, cohort) this week; a learner with XP this week and
/// no place joins one.
async fn membership(
    db: &Db,
    user: Uuid,
    week: NaiveDate,
    week_xp: i64,
) -> Result<Option<(i16, i32)>, sqlx::Error> {
    let find = "SELECT tier, cohort FROM league_members WHERE week = $1 AND user_id = $2";
    let found: Option<(i16, i32)> = sqlx::query_as(find)
        .bind(week)
        .bind(user)
        .fetch_optional(db.write())
        .await?;
    if found.is_some() || week_xp <= 0 {
        return Ok(found);
    }
    let mut tx = db.write().begin().await?;
    let last: Option<(i16, Option<String>)> = sqlx::query_as(
        "SELECT tier, outcome FROM league_members WHERE user_id = $1 AND week < $2
          ORDER BY week DESC LIMIT 1",
    )
    .bind(user)
    .bind(week)
    .fetch_optional(&mut *tx)
    .await?;
    let tier = last.map_or(0, |(tier, outcome)| {
        next_tier(tier, Outcome::from_key(outcome.as_deref()))
    });
    sqlx::query("SELECT pg_advisory_xact_lock($1, 1 + $2::int4)")
        .bind(LOCK_CLASS)
        .bind(i32::from(tier))
        .execute(&mut *tx)
        .await?;
    // A concurrent request of the same learner may have placed them.
    if let Some(found) = sqlx::query_as::<_, (i16, i32)>(find)
        .bind(week)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?
    {
        return Ok(Some(found));
    }
    let cohort: i32 = sqlx::query_scalar(
        "SELECT coalesce(
                  (SELECT cohort FROM league_members WHERE week = $1 AND tier = $2
                    GROUP BY cohort HAVING count(*) < $3
                    ORDER BY count(*), cohort LIMIT 1),
                  (SELECT coalesce(max(cohort) + 1, 0) FROM league_members
                    WHERE week = $1 AND tier = $2))",
    )
    .bind(week)
    .bind(tier)
    .bind(i64::try_from(COHORT_SIZE).unwrap_or(i64::MAX))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO league_members (week, user_id, tier, cohort) VALUES ($1, $2, $3, $4)")
        .bind(week)
        .bind(user)
        .bind(tier)
        .bind(cohort)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some((tier, cohort)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn the_best_fifth_goes_up_and_the_last_fifth_goes_down() {
        let members: Vec<(Uuid, i64)> = (1..=10)
            .map(|n| (id(n), i64::try_from(n).unwrap_or(0) * 10))
            .collect();
        let placed = results(2, &members);
        let outcomes: Vec<Outcome> = placed.iter().map(|p| p.3).collect();
        assert_eq!(placed[0].0, id(10), "most XP first");
        assert_eq!(&outcomes[..2], [Outcome::Promoted; 2]);
        assert!(outcomes[2..8].iter().all(|o| *o == Outcome::Stayed));
        assert_eq!(&outcomes[8..], [Outcome::Demoted; 2]);
    }

    #[test]
    fn no_xp_means_demotion_never_promotion_and_the_ends_are_bounded() {
        let idle = [(id(1), 0), (id(2), 0), (id(3), 0), (id(4), 0), (id(5), 0)];
        assert!(results(1, &idle).iter().all(|p| p.3 == Outcome::Demoted));
        assert!(
            results(0, &idle).iter().all(|p| p.3 == Outcome::Stayed),
            "bronze is the floor"
        );
        let busy: Vec<(Uuid, i64)> = (1..=5).map(|n| (id(n), 100)).collect();
        let top = results(TOP_TIER, &busy);
        assert!(
            top.iter().all(|p| p.3 != Outcome::Promoted),
            "diamond is the ceiling"
        );
        assert_eq!(next_tier(TOP_TIER, Outcome::Promoted), TOP_TIER);
        assert_eq!(next_tier(0, Outcome::Demoted), 0);
    }

    #[test]
    fn cohorts_are_as_few_as_the_size_allows_and_even() {
        assert!(cohorts(0).is_empty());
        assert_eq!(cohorts(30).len(), 1);
        assert_eq!(cohorts(30)[0], 0..30);
        assert_eq!(cohorts(31), [0..15, 15..31]);
        let sizes: Vec<usize> = cohorts(70).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [23, 23, 24]);
        for n in 1..200 {
            let parts = cohorts(n);
            assert_eq!(parts.iter().map(|r| r.len()).sum::<usize>(), n);
            assert!(
                parts
                    .iter()
                    .all(|r| r.len() <= COHORT_SIZE && r.len() + 1 >= n / parts.len())
            );
        }
    }
}
