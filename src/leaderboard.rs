//! XP leaderboards in Redis sorted sets: all-time and per ISO week (UTC).
//!
//! Postgres is the source of truth: `user_progress.xp` (all time) and
//! `user_weekly_xp` (per week), both maintained in the attempt's transaction.
//! After an attempt commits, the learner's *absolute* totals are written to
//! the boards with `ZADD GT`: a score only ever moves up to a value Postgres
//! had, so updates arriving out of order, twice, or racing a rebuild can
//! neither lower a score nor count XP twice (XP is never taken away).
//!
//! Self-healing:
//! - A board whose `:ready` marker is missing (Redis restarted empty, evicted,
//!   flushed) is rebuilt from Postgres by the first reader, under a short lock.
//!   The rebuild loads a temporary key and merges it into the board in one
//!   Lua call (`ZUNIONSTORE … AGGREGATE MAX`), so readers never see a
//!   half-built board and totals written meanwhile are kept.
//! - An update that could not be applied (circuit open, command failed) is
//!   remembered by the instance; as soon as Redis answers again, the boards it
//!   touched are marked stale for every instance: their `:gen` counter moves
//!   and `:ready` is dropped, so the next read rebuilds them. A rebuild that
//!   was already running sets `:ready` only if `:gen` did not move meanwhile.
//!   The learner's next attempt also rewrites their own totals.
//!
//! While Redis is unreachable the boards are read from Postgres directly.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

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

/// A learner's XP right after an attempt committed.
#[derive(Clone, Copy, Debug)]
pub struct XpTotals {
    pub all_time: i64,
    /// In the ISO week (UTC) of `at`.
    pub week: i64,
    /// When the attempt was recorded.
    pub at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Leaderboard {
    redis: Redis,
    prefix: String,
    finish: redis::Script,
    /// Boards that missed an update while Redis was unreachable.
    missed: Arc<Mutex<HashSet<Board>>>,
}

/// How long a week's board is kept after it starts (it is read while current).
const WEEK_TTL_SECS: i64 = 15 * 86_400;

/// How long a rebuild may hold its lock (and its temporary key may live).
const BUILD_LOCK_MS: i64 = 10_000;

/// Ends a rebuild atomically. KEYS: board, temporary, ready, gen, building.
/// ARGV: the `gen` seen before reading Postgres, the board's TTL (0: none).
/// Returns 1 if the board is now ready, 0 if it went stale meanwhile.
const FINISH_REBUILD: &str = r"
redis.call('ZUNIONSTORE', KEYS[1], 2, KEYS[1], KEYS[2], 'AGGREGATE', 'MAX')
redis.call('DEL', KEYS[2], KEYS[5])
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
if (redis.call('GET', KEYS[4]) or '0') ~= ARGV[1] then
  return 0
end
if ttl > 0 then
  redis.call('SET', KEYS[3], 1, 'EX', ttl)
else
  redis.call('SET', KEYS[3], 1)
end
return 1
";

/// One board's keys in Redis. Boards are equal when their keys are.
#[derive(Clone, Debug)]
struct Board {
    key: String,
    period: Period,
    /// An instant the board is for (in its week, for weekly boards).
    at: DateTime<Utc>,
}

impl PartialEq for Board {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Board {}

impl std::hash::Hash for Board {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl Board {
    fn ready(&self) -> String {
        format!("{}:ready", self.key)
    }
    fn generation(&self) -> String {
        format!("{}:gen", self.key)
    }
    fn building(&self) -> String {
        format!("{}:building", self.key)
    }
    fn temporary(&self) -> String {
        format!("{}:tmp", self.key)
    }
    fn ttl_secs(&self) -> i64 {
        match self.period {
            Period::Weekly => WEEK_TTL_SECS,
            Period::AllTime => 0,
        }
    }
}

impl Leaderboard {
    pub fn new(redis: Redis, prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}lb:"),
            finish: redis::Script::new(FINISH_REBUILD),
            missed: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn board(&self, period: Period, at: DateTime<Utc>) -> Board {
        let key = match period {
            Period::AllTime => format!("{}all", self.prefix),
            Period::Weekly => {
                let week = at.iso_week();
                format!("{}week:{}-W{:02}", self.prefix, week.year(), week.week())
            }
        };
        Board { key, period, at }
    }

    fn remember_missed(&self, boards: impl IntoIterator<Item = Board>) {
        let mut missed = self.missed.lock().unwrap_or_else(PoisonError::into_inner);
        missed.extend(boards);
    }

    /// Marks the boards that missed updates stale for every instance, once
    /// Redis answers again. Cheap when nothing was missed.
    async fn flush_missed(&self) -> Result<(), redis::RedisError> {
        let boards: Vec<Board> = {
            let missed = self.missed.lock().unwrap_or_else(PoisonError::into_inner);
            if missed.is_empty() {
                return Ok(());
            }
            missed.iter().cloned().collect()
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        for board in &boards {
            pipe.cmd("INCR").arg(board.generation()).ignore();
            if board.ttl_secs() > 0 {
                pipe.cmd("EXPIRE")
                    .arg(board.generation())
                    .arg(board.ttl_secs())
                    .ignore();
            }
            pipe.cmd("DEL").arg(board.ready()).ignore();
        }
        pipe.query_async::<()>(&mut self.redis.connection()).await?;
        let mut missed = self.missed.lock().unwrap_or_else(PoisonError::into_inner);
        for board in &boards {
            missed.remove(board);
        }
        tracing::info!(
            boards = boards.len(),
            "leaderboards that missed updates marked stale; the next read rebuilds them"
        );
        Ok(())
    }

    /// Sets `user`'s totals on both boards (after the attempt committed).
    /// If Redis cannot take them, the boards are healed later (module docs).
    pub async fn record(&self, user: Uuid, totals: XpTotals) {
        let boards = [
            (self.board(Period::AllTime, totals.at), totals.all_time),
            (self.board(Period::Weekly, totals.at), totals.week),
        ];
        if !self.redis.available() {
            self.remember_missed(boards.into_iter().map(|(board, _)| board));
            return;
        }
        let mut pipe = redis::pipe();
        for (board, xp) in &boards {
            if *xp <= 0 {
                continue;
            }
            pipe.cmd("ZADD")
                .arg(&board.key)
                .arg("GT")
                .arg(*xp)
                .arg(user.to_string())
                .ignore();
            if board.ttl_secs() > 0 {
                pipe.cmd("EXPIRE")
                    .arg(&board.key)
                    .arg(board.ttl_secs())
                    .ignore();
            }
        }
        let result = match self.flush_missed().await {
            Ok(()) => pipe.query_async::<()>(&mut self.redis.connection()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => self.redis.report_success(),
            Err(e) => {
                self.redis.report_failure(&e);
                self.remember_missed(boards.into_iter().map(|(board, _)| board));
            }
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

    /// None when the board is being rebuilt right now (by another caller, or
    /// this rebuild went stale at once): the caller reads Postgres this time.
    async fn read_redis(
        &self,
        pool: &PgPool,
        period: Period,
        now: DateTime<Utc>,
        user: Uuid,
        limit: i64,
    ) -> Result<Option<(Vec<Entry>, Option<(i64, i64)>)>, RedisOrDb> {
        self.flush_missed().await?;
        let board = self.board(period, now);
        let mut conn = self.redis.connection();
        let ready: bool = redis::cmd("EXISTS")
            .arg(board.ready())
            .query_async(&mut conn)
            .await?;
        if !ready && !self.rebuild(pool, &board).await? {
            return Ok(None);
        }
        let stop = isize::try_from(limit - 1).unwrap_or(0);
        let (top, rank, score): (Vec<(String, f64)>, Option<i64>, Option<f64>) = redis::pipe()
            .cmd("ZREVRANGE")
            .arg(&board.key)
            .arg(0)
            .arg(stop)
            .arg("WITHSCORES")
            .cmd("ZREVRANK")
            .arg(&board.key)
            .arg(user.to_string())
            .cmd("ZSCORE")
            .arg(&board.key)
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

    /// Rebuilds a board from Postgres; false if another caller holds the lock
    /// or the board was marked stale while this one read Postgres.
    async fn rebuild(&self, pool: &PgPool, board: &Board) -> Result<bool, RedisOrDb> {
        let mut conn = self.redis.connection();
        let locked: Option<String> = redis::cmd("SET")
            .arg(board.building())
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(BUILD_LOCK_MS)
            .query_async(&mut conn)
            .await?;
        if locked.is_none() {
            return Ok(false);
        }
        // Read before Postgres: a stale mark after this point keeps the
        // board from being declared ready.
        let generation: Option<i64> = redis::cmd("GET")
            .arg(board.generation())
            .query_async(&mut conn)
            .await?;
        let rows = match totals(pool, board.period, board.at, None).await {
            Ok(rows) => rows,
            Err(e) => {
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(board.building())
                    .query_async(&mut conn)
                    .await;
                return Err(RedisOrDb::Db(e));
            }
        };
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(board.temporary()).ignore();
        for chunk in rows.chunks(1000) {
            let cmd = pipe.cmd("ZADD").arg(board.temporary());
            for (user, xp) in chunk {
                cmd.arg(*xp).arg(user.to_string());
            }
            cmd.ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(board.temporary())
            .arg(BUILD_LOCK_MS)
            .ignore();
        pipe.query_async::<()>(&mut conn).await?;
        let ready: i64 = self
            .finish
            .key(&board.key)
            .key(board.temporary())
            .key(board.ready())
            .key(board.generation())
            .key(board.building())
            .arg(generation.unwrap_or(0).to_string())
            .arg(board.ttl_secs())
            .invoke_async(&mut conn)
            .await?;
        tracing::info!(
            board = board.key,
            users = rows.len(),
            ready = ready == 1,
            "leaderboard rebuilt from Postgres"
        );
        Ok(ready == 1)
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
            sqlx::query_as(
                "SELECT user_id, xp FROM user_weekly_xp WHERE week = $1 AND xp > 0
                  ORDER BY xp DESC, user_id LIMIT $2",
            )
            .bind(week_bounds(now).0)
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
            sqlx::query_as(
                "SELECT (SELECT count(*) + 1 FROM user_weekly_xp o
                          WHERE o.week = w.week AND o.xp > w.xp), w.xp
                   FROM user_weekly_xp w WHERE w.user_id = $1 AND w.week = $2 AND w.xp > 0",
            )
            .bind(user)
            .bind(week_bounds(now).0)
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
