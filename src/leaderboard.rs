//! XP leaderboards in Redis sorted sets: all-time and per ISO week (UTC).
//!
//! Each attempt adds its XP with `ZINCRBY` after it commits. Postgres stays the
//! source of truth: a board whose `:ready` marker is missing (Redis restarted
//! empty, evicted, flushed) is rebuilt from `user_progress` (all time) or the
//! week's `attempts` (one partition) by the first reader, under a short lock,
//! with `ZADD GT` so increments that raced the rebuild are not lowered. While
//! Redis is unreachable the boards are read from Postgres directly.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::cache::redis::Redis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Weekly,
    AllTime,
}

impl Period {
    pub fn from_key(key: &str) -> Option<Period> {
        match key {
            "weekly" => Some(Period::Weekly),
            "all_time" => Some(Period::AllTime),
            _ => None,
        }
    }
}

/// Monday 00:00 UTC of the ISO week containing `at`, and the next Monday.
pub fn week_bounds(at: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let day = at.date_naive();
    let monday = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
    (monday, monday + Duration::days(7))
}

/// One entry of a board: (user, xp), best first.
pub type Entry = (Uuid, i64);

#[derive(Clone)]
pub struct Leaderboard {
    redis: Redis,
    prefix: String,
}

/// How long a week's board is kept after it starts (it is read while current).
const WEEK_TTL_SECS: i64 = 15 * 86_400;

impl Leaderboard {
    pub fn new(redis: Redis, prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}lb:"),
        }
    }

    fn key(&self, period: Period, at: DateTime<Utc>) -> String {
        match period {
            Period::AllTime => format!("{}all", self.prefix),
            Period::Weekly => {
                let week = at.iso_week();
                format!("{}week:{}-W{:02}", self.prefix, week.year(), week.week())
            }
        }
    }

    /// Adds `xp` for `user` to both boards (after the attempt committed).
    /// Best effort: a lost increment is healed by the next rebuild.
    pub async fn add(&self, user: Uuid, xp: i64, at: DateTime<Utc>) {
        if xp == 0 || !self.redis.available() {
            return;
        }
        let mut conn = self.redis.connection();
        let week = self.key(Period::Weekly, at);
        let result: Result<(), _> = redis::pipe()
            .cmd("ZINCRBY")
            .arg(self.key(Period::AllTime, at))
            .arg(xp)
            .arg(user.to_string())
            .ignore()
            .cmd("ZINCRBY")
            .arg(&week)
            .arg(xp)
            .arg(user.to_string())
            .ignore()
            .cmd("EXPIRE")
            .arg(&week)
            .arg(WEEK_TTL_SECS)
            .ignore()
            .query_async(&mut conn)
            .await;
        match result {
            Ok(()) => self.redis.report_success(),
            Err(e) => self.redis.report_failure(&e),
        }
    }

    /// The best `limit` entries and `user`'s own (rank from 1, xp), from Redis
    /// (rebuilt first if it lost the board) or, if Redis is unavailable, from
    /// Postgres.
    pub async fn read(
        &self,
        pool: &PgPool,
        period: Period,
        user: Uuid,
        limit: i64,
    ) -> Result<(Vec<Entry>, Option<(i64, i64)>), sqlx::Error> {
        let now = Utc::now();
        if self.redis.available() {
            match self.read_redis(pool, period, now, user, limit).await {
                Ok(Some(board)) => return Ok(board),
                Ok(None) => {}
                Err(RedisOrDb::Db(e)) => return Err(e),
                Err(RedisOrDb::Redis(e)) => self.redis.report_failure(&e),
            }
        }
        read_postgres(pool, period, now, user, limit).await
    }

    /// None when another instance is rebuilding the board right now.
    async fn read_redis(
        &self,
        pool: &PgPool,
        period: Period,
        now: DateTime<Utc>,
        user: Uuid,
        limit: i64,
    ) -> Result<Option<(Vec<Entry>, Option<(i64, i64)>)>, RedisOrDb> {
        let key = self.key(period, now);
        let mut conn = self.redis.connection();
        let ready: bool = redis::cmd("EXISTS")
            .arg(format!("{key}:ready"))
            .query_async(&mut conn)
            .await?;
        if !ready && !self.rebuild(pool, period, now, &key).await? {
            return Ok(None);
        }
        let stop = isize::try_from(limit - 1).unwrap_or(0);
        let (top, rank, score): (Vec<(String, f64)>, Option<i64>, Option<f64>) = redis::pipe()
            .cmd("ZREVRANGE")
            .arg(&key)
            .arg(0)
            .arg(stop)
            .arg("WITHSCORES")
            .cmd("ZREVRANK")
            .arg(&key)
            .arg(user.to_string())
            .cmd("ZSCORE")
            .arg(&key)
            .arg(user.to_string())
            .query_async(&mut conn)
            .await?;
        self.redis.report_success();
        let entries = top
            .into_iter()
            .filter_map(|(member, score)| Some((member.parse().ok()?, score_to_xp(score))))
            .collect();
        let me = rank.zip(score).map(|(r, s)| (r + 1, score_to_xp(s)));
        Ok(Some((entries, me)))
    }

    /// Rebuilds a board from Postgres; false if another caller holds the lock.
    async fn rebuild(
        &self,
        pool: &PgPool,
        period: Period,
        now: DateTime<Utc>,
        key: &str,
    ) -> Result<bool, RedisOrDb> {
        let mut conn = self.redis.connection();
        let locked: Option<String> = redis::cmd("SET")
            .arg(format!("{key}:building"))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(10_000)
            .query_async(&mut conn)
            .await?;
        if locked.is_none() {
            return Ok(false);
        }
        let rows = totals(pool, period, now, None)
            .await
            .map_err(RedisOrDb::Db)?;
        let mut pipe = redis::pipe();
        for chunk in rows.chunks(1000) {
            let cmd = pipe.cmd("ZADD").arg(key).arg("GT");
            for (user, xp) in chunk {
                cmd.arg(*xp).arg(user.to_string());
            }
            cmd.ignore();
        }
        if period == Period::Weekly {
            pipe.cmd("EXPIRE").arg(key).arg(WEEK_TTL_SECS).ignore();
        }
        pipe.cmd("SET").arg(format!("{key}:ready")).arg(1).ignore();
        if period == Period::Weekly {
            pipe.cmd("EXPIRE")
                .arg(format!("{key}:ready"))
                .arg(WEEK_TTL_SECS)
                .ignore();
        }
        pipe.cmd("DEL").arg(format!("{key}:building")).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        tracing::info!(
            board = key,
            users = rows.len(),
            "leaderboard rebuilt from Postgres"
        );
        Ok(true)
    }
}

enum RedisOrDb {
    Redis(redis::RedisError),
    Db(sqlx::Error),
}

impl From<redis::RedisError> for RedisOrDb {
    fn from(e: redis::RedisError) -> Self {
        RedisOrDb::Redis(e)
    }
}

fn score_to_xp(score: f64) -> i64 {
    // Scores are sums of small integers, exact in an f64 up to 2^53.
    score.round() as i64
}

/// XP per user from Postgres, best first (all users, or the top `limit`).
async fn totals(
    pool: &PgPool,
    period: Period,
    now: DateTime<Utc>,
    limit: Option<i64>,
) -> Result<Vec<Entry>, sqlx::Error> {
    let limit = limit.unwrap_or(i64::MAX);
    match period {
        Period::AllTime => {
            sqlx::query_as(
                "SELECT user_id, xp FROM user_progress WHERE xp > 0
                  ORDER BY xp DESC, user_id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        Period::Weekly => {
            let (from, to) = week_bounds(now);
            // Bounded by the week: pruned to one partition.
            sqlx::query_as(
                "SELECT user_id, sum(xp)::int8 AS xp FROM attempts
                  WHERE created_at >= $1::date AND created_at < $2::date
                  GROUP BY user_id HAVING sum(xp) > 0
                  ORDER BY xp DESC, user_id LIMIT $3",
            )
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
    }
}

async fn read_postgres(
    pool: &PgPool,
    period: Period,
    now: DateTime<Utc>,
    user: Uuid,
    limit: i64,
) -> Result<(Vec<Entry>, Option<(i64, i64)>), sqlx::Error> {
    let top = totals(pool, period, now, Some(limit)).await?;
    let me: Option<(i64, i64)> = match period {
        Period::AllTime => {
            sqlx::query_as(
                "SELECT (SELECT count(*) + 1 FROM user_progress o WHERE o.xp > p.xp), p.xp
                   FROM user_progress p WHERE p.user_id = $1 AND p.xp > 0",
            )
            .bind(user)
            .fetch_optional(pool)
            .await?
        }
        Period::Weekly => {
            let (from, to) = week_bounds(now);
            sqlx::query_as(
                "WITH week AS (
                    SELECT user_id, sum(xp)::int8 AS xp FROM attempts
                     WHERE created_at >= $1::date AND created_at < $2::date
                     GROUP BY user_id)
                 SELECT (SELECT count(*) + 1 FROM week o WHERE o.xp > w.xp), w.xp
                   FROM week w WHERE w.user_id = $3 AND w.xp > 0",
            )
            .bind(from)
            .bind(to)
            .bind(user)
            .fetch_optional(pool)
            .await?
        }
    };
    Ok((top, me))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn weeks_start_on_monday_in_utc() {
        let sunday = Utc
            .with_ymd_and_hms(2026, 11, 22, 23, 59, 0)
            .single()
            .expect("time");
        let (from, to) = week_bounds(sunday);
        assert_eq!(from, NaiveDate::from_ymd_opt(2026, 11, 16).expect("date"));
        assert_eq!(to, NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"));
        let monday = Utc
            .with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
            .single()
            .expect("time");
        assert_eq!(week_bounds(monday).0, to);
    }

    #[test]
    fn periods_parse_from_their_keys() {
        assert_eq!(Period::from_key("weekly"), Some(Period::Weekly));
        assert_eq!(Period::from_key("all_time"), Some(Period::AllTime));
        assert_eq!(Period::from_key("monthly"), None);
    }
}
