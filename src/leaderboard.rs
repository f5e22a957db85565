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
//! - A board whose `:ready` marker or whose own key is missing (Redis
//!   restarted empty, evicted, flushed) is rebuilt from Postgres in the background, started by the first
//!   reader that notices (at most one rebuild per board per instance, and one
//!   across instances under a lock in Redis); readers are served from Postgres
//!   until it is ready. The rebuild reads the totals in keyset batches of
//!   [`REBUILD_BATCH`] users (by user id: a stable order, whatever XP changes
//!   meanwhile), loads them into a temporary key, and merges that into the
//!   board in one Lua call (`ZUNIONSTORE … AGGREGATE MAX`), so readers never
//!   see a half-built board and totals written meanwhile are kept.
//! - An update that could not be applied (circuit open, command failed) is
//!   remembered by the instance; as soon as Redis answers again, the boards it
//!   touched are marked stale for every instance: their `:gen` counter moves
//!   and `:ready` is dropped, so the next read rebuilds them. A rebuild that
//!   was already running sets `:ready` only if `:gen` did not move meanwhile.
//!   The learner's next attempt also rewrites their own totals.
//! - A deleted account that could not be taken off the boards is remembered
//!   the same way and taken off as soon as Redis answers again. A rebuild
//!   would not drop it: it merges what Postgres has into the board and keeps
//!   what is there (`AGGREGATE MAX`).
//! - A rebuild holds its lock under a token of its own and loads into a
//!   temporary key of its own. If the lock or that key vanished midway (Redis
//!   flushed, evicted or failed over while it read Postgres), what it loaded
//!   may be incomplete: it merges nothing and marks nothing ready, and the
//!   background task tries again.
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
    release: redis::Script,
    /// Boards that missed an update while Redis was unreachable.
    missed: Arc<Mutex<HashSet<Board>>>,
    /// Deleted accounts Redis could not be told about yet (`remove`).
    missed_removals: Arc<Mutex<HashSet<Uuid>>>,
    /// Boards this instance is rebuilding right now.
    rebuilding: Arc<Mutex<HashSet<String>>>,
}

/// Users read from Postgres (and written to Redis) per rebuild step.
pub const REBUILD_BATCH: i64 = 5_000;

/// How long a week's board is kept after it starts (it is read while current).
const WEEK_TTL_SECS: i64 = 15 * 86_400;

/// How long a rebuild may go without progress before its lock (and its
/// temporary key) expire; every batch extends both.
const BUILD_LOCK_MS: i64 = 10_000;

/// Ends a rebuild atomically. KEYS: board, temporary, ready, gen, building.
/// ARGV: the `gen` seen before reading Postgres, the board's TTL (0: none),
/// the rebuild's lock token, how many users it loaded.
/// Returns 1 if the board is now ready, 0 if it went stale meanwhile, -1 if
/// the rebuild lost its lock or its temporary key (expired, evicted, flushed:
/// what it loaded may be incomplete, so it is not merged).
const FINISH_REBUILD: &str = r"
if redis.call('GET', KEYS[5]) ~= ARGV[3] then
  redis.call('DEL', KEYS[2])
  return -1
end
if tonumber(ARGV[4]) > 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[5])
  return -1
end
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

/// Deletes a lock (KEYS[1]) only if it still holds this token (ARGV[1]).
const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How many times a background rebuild runs before leaving the board to the
/// next reader (each try that went stale or lost its keys starts over).
const REBUILD_TRIES: u32 = 3;

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
    /// Each rebuild loads into a key of its own: one whose lock expired
    /// cannot write into its successor's.
    fn temporary(&self, token: &str) -> String {
        format!("{}:tmp:{token}", self.key)
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
            release: redis::Script::new(RELEASE_LOCK),
            missed: Arc::new(Mutex::new(HashSet::new())),
            missed_removals: Arc::new(Mutex::new(HashSet::new())),
            rebuilding: Arc::new(Mutex::new(HashSet::new())),
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

    /// Once Redis answers again: marks the boards that missed updates stale
    /// for every instance, and takes the deleted accounts it missed off the
    /// boards. Cheap when nothing was missed.
    async fn flush_missed(&self) -> Result<(), redis::RedisError> {
        self.flush_missed_boards().await?;
        self.flush_missed_removals().await
    }

    async fn flush_missed_boards(&self) -> Result<(), redis::RedisError> {
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

    async fn flush_missed_removals(&self) -> Result<(), redis::RedisError> {
        let users: Vec<Uuid> = {
            let missed = self
                .missed_removals
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if missed.is_empty() {
                return Ok(());
            }
            missed.iter().copied().collect()
        };
        self.removal(&users)
            .query_async::<()>(&mut self.redis.connection())
            .await?;
        let mut missed = self
            .missed_removals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for user in &users {
            missed.remove(user);
        }
        tracing::info!(
            accounts = users.len(),
            "deleted accounts that Redis missed taken off the leaderboards"
        );
        Ok(())
    }

    /// ZREM of `users` from every board that may hold them: all time, and
    /// the weeks still kept (a week's board lives 15 days).
    fn removal(&self, users: &[Uuid]) -> redis::Pipeline {
        let now = Utc::now();
        let mut pipe = redis::pipe();
        for at in [now, now - Duration::days(7), now - Duration::days(14)] {
            for period in [Period::AllTime, Period::Weekly] {
                let cmd = pipe.cmd("ZREM").arg(self.board(period, at).key);
                for user in users {
                    cmd.arg(user.to_string());
                }
                cmd.ignore();
            }
        }
        pipe
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

    /// `user`'s standing on the weekly and all-time boards as Redis has it
    /// now: (rank from 1, xp) each, None where absent. For live updates.
    pub async fn standing(
        &self,
        user: Uuid,
        at: DateTime<Utc>,
    ) -> Result<[Option<(i64, i64)>; 2], redis::RedisError> {
        let mut pipe = redis::pipe();
        for period in [Period::Weekly, Period::AllTime] {
            let board = self.board(period, at);
            pipe.cmd("ZREVRANK")
                .arg(&board.key)
                .arg(user.to_string())
                .cmd("ZSCORE")
                .arg(&board.key)
                .arg(user.to_string());
        }
        let (wr, ws, ar, asc): (Option<i64>, Option<f64>, Option<i64>, Option<f64>) =
            pipe.query_async(&mut self.redis.connection()).await?;
        Ok([
            wr.zip(ws).map(|(r, s)| (r + 1, score_to_xp(s))),
            ar.zip(asc).map(|(r, s)| (r + 1, score_to_xp(s))),
        ])
    }

    /// Takes a deleted account off every board that may hold it. If Redis
    /// cannot take it now (circuit open, command failed), the instance
    /// remembers the account and removes it as soon as Redis answers again
    /// (`flush_missed`): the account's rows are gone by now, so nothing else
    /// would retry this, and an entry left behind would take a rank from
    /// everyone below it until a page showed it (`forget`).
    pub async fn remove(&self, user: Uuid) {
        if self.redis.available() {
            let result = match self.flush_missed().await {
                Ok(()) => {
                    self.removal(&[user])
                        .query_async::<()>(&mut self.redis.connection())
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.redis.report_success();
                    return;
                }
                Err(e) => self.redis.report_failure(&e),
            }
        }
        tracing::warn!(%user, "could not take a deleted account off the leaderboards yet; it goes once Redis answers");
        self.missed_removals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user);
    }

    /// Drops `users` from the current board of `period` (accounts that no
    /// longer exist, found on a page: see `remove`).
    pub async fn forget(&self, period: Period, users: &[Uuid]) {
        if users.is_empty() || !self.redis.available() {
            return;
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.board(period, Utc::now()).key);
        for user in users {
            cmd.arg(user.to_string());
        }
        if let Err(e) = cmd.query_async::<i64>(&mut self.redis.connection()).await {
            self.redis.report_failure(&e);
        }
    }

    /// The best `limit` entries and `user`'s own (rank from 1, xp), from Redis
    /// (rebuilt first if it lost the board) or, if Redis is unavailable, from
    /// Postgres. `pools` are the primaries of every database holding
    /// per-user rows (main and each shard).
    pub async fn read(
        &self,
        pools: &[PgPool],
        period: Period,
        user: Uuid,
        limit: i64,
    ) -> Result<(Vec<Entry>, Option<(i64, i64)>), sqlx::Error> {
        let now = Utc::now();
        if self.redis.available() {
            match self.read_redis(pools, period, now, user, limit).await {
                Ok(Some(board)) => return Ok(board),
                Ok(None) => {}
                Err(RebuildError::Db(e)) => return Err(e),
                Err(RebuildError::Redis(e)) => self.redis.report_failure(&e),
            }
        }
        read_postgres(pools, period, now, user, limit).await
    }

    /// None when the board is not ready: a rebuild is started in the
    /// background (unless one is running here already), and the caller reads
    /// Postgres this time.
    async fn read_redis(
        &self,
        pools: &[PgPool],
        period: Period,
        now: DateTime<Utc>,
        user: Uuid,
        limit: i64,
    ) -> Result<Option<(Vec<Entry>, Option<(i64, i64)>)>, RebuildError> {
        self.flush_missed().await?;
        let board = self.board(period, now);
        let mut conn = self.redis.connection();
        // Ready only with the board itself present: Redis can evict (or a
        // flush can take) the board's key and leave its small marker, and
        // an absent board read as ready would be an empty ranking.
        let (ready, present): (bool, bool) = redis::pipe()
            .cmd("EXISTS")
            .arg(board.ready())
            .cmd("EXISTS")
            .arg(&board.key)
            .query_async(&mut conn)
            .await?;
        if !(ready && present) {
            self.spawn_rebuild(pools.to_vec(), board);
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

    /// Starts rebuilding `board` on a task of its own, unless this instance
    /// is rebuilding it already.
    fn spawn_rebuild(&self, pools: Vec<PgPool>, board: Board) {
        {
            let mut running = self
                .rebuilding
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !running.insert(board.key.clone()) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            // A rebuild that went stale or lost its keys midway is tried
            // again at once: readers are on Postgres until one completes.
            let mut result = this.rebuild(&pools, &board).await;
            for _ in 1..REBUILD_TRIES {
                if !matches!(result, Ok(Rebuilt::Stale | Rebuilt::Lost)) {
                    break;
                }
                result = this.rebuild(&pools, &board).await;
            }
            this.rebuilding
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&board.key);
            match result {
                Ok(_) => this.redis.report_success(),
                Err(RebuildError::Redis(e)) => this.redis.report_failure(&e),
                Err(RebuildError::Db(e)) => tracing::warn!(
                    board = board.key,
                    error = %e,
                    "leaderboard rebuild could not read Postgres; the next read retries"
                ),
            }
        });
    }

    /// Rebuilds the current board of `period` now and waits for it (the
    /// background rebuild's body; for tests and maintenance). False if another
    /// rebuild holds the lock or the board was marked stale meanwhile.
    pub async fn rebuild_now(
        &self,
        pools: &[PgPool],
        period: Period,
    ) -> Result<bool, RebuildError> {
        let rebuilt = self.rebuild(pools, &self.board(period, Utc::now())).await?;
        Ok(rebuilt == Rebuilt::Ready)
    }

    /// Rebuilds a board from Postgres (every shard in turn); false if another
    /// caller holds the lock or the board was marked stale while this one
    /// read Postgres. A user read on two shards (their bucket was moving) is
    /// one member of the board with one score.
    async fn rebuild(&self, pools: &[PgPool], board: &Board) -> Result<Rebuilt, RebuildError> {
        let mut conn = self.redis.connection();
        let token = Uuid::new_v4().simple().to_string();
        let temporary = board.temporary(&token);
        let locked: Option<String> = redis::cmd("SET")
            .arg(board.building())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(BUILD_LOCK_MS)
            .query_async(&mut conn)
            .await?;
        if locked.is_none() {
            return Ok(Rebuilt::Busy);
        }
        // Read before Postgres: a stale mark after this point keeps the
        // board from being declared ready.
        let generation: Option<i64> = redis::cmd("GET")
            .arg(board.generation())
            .query_async(&mut conn)
            .await?;
        let mut users = 0_usize;
        for pool in pools {
            let mut after = None;
            loop {
                let rows = match totals_batch(pool, board.period, board.at, after).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _: Result<(), _> = redis::cmd("DEL")
                            .arg(&temporary)
                            .query_async(&mut conn)
                            .await;
                        // Released only if it is still this rebuild's.
                        let _: Result<i64, _> = self
                            .release
                            .key(board.building())
                            .arg(&token)
                            .invoke_async(&mut conn)
                            .await;
                        return Err(RebuildError::Db(e));
                    }
                };
                let Some(&(last, _)) = rows.last() else {
                    break;
                };
                let mut pipe = redis::pipe();
                for chunk in rows.chunks(1000) {
                    let cmd = pipe.cmd("ZADD").arg(&temporary);
                    for (user, xp) in chunk {
                        cmd.arg(*xp).arg(user.to_string());
                    }
                    cmd.ignore();
                }
                // Progress: the lock and the partial board live on.
                for key in [temporary.clone(), board.building()] {
                    pipe.cmd("PEXPIRE").arg(key).arg(BUILD_LOCK_MS).ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                users += rows.len();
                if i64::try_from(rows.len()).unwrap_or(i64::MAX) < REBUILD_BATCH {
                    break;
                }
                after = Some(last);
            }
        }
        let outcome: i64 = self
            .finish
            .key(&board.key)
            .key(&temporary)
            .key(board.ready())
            .key(board.generation())
            .key(board.building())
            .arg(generation.unwrap_or(0).to_string())
            .arg(board.ttl_secs())
            .arg(&token)
            .arg(users)
            .invoke_async(&mut conn)
            .await?;
        let rebuilt = match outcome {
            1 => Rebuilt::Ready,
            0 => Rebuilt::Stale,
            _ => Rebuilt::Lost,
        };
        tracing::info!(
            board = board.key,
            users,
            ?rebuilt,
            "leaderboard rebuilt from Postgres"
        );
        Ok(rebuilt)
    }
}

/// How a rebuild ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rebuilt {
    /// The board is complete and marked ready.
    Ready,
    /// Another rebuild holds the lock.
    Busy,
    /// Updates were missed while it read Postgres: merged, not marked ready.
    Stale,
    /// Its lock or temporary key vanished midway: nothing merged.
    Lost,
}

/// Why a rebuild (or a read that needed Redis) failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

fn score_to_xp(score: f64) -> i64 {
    // Scores are sums of small integers, exact in an f64 up to 2^53.
    score.round() as i64
}

/// The next [`REBUILD_BATCH`] users with XP on a board after user `after`,
/// by user id (a primary-key range scan: the order never changes while XP
/// does, so no user is skipped or read twice).
async fn totals_batch(
    pool: &PgPool,
    period: Period,
    at: DateTime<Utc>,
    after: Option<Uuid>,
) -> Result<Vec<Entry>, sqlx::Error> {
    let after = after.unwrap_or(Uuid::nil());
    match period {
        Period::AllTime => {
            sqlx::query_as(
                "SELECT user_id, xp FROM user_progress
                  WHERE user_id > $1 AND xp > 0
                  ORDER BY user_id LIMIT $2",
            )
            .bind(after)
            .bind(REBUILD_BATCH)
            .fetch_all(pool)
            .await
        }
        Period::Weekly => {
            sqlx::query_as(
                "SELECT user_id, xp FROM user_weekly_xp
                  WHERE user_id > $1 AND week = $2 AND xp > 0
                  ORDER BY user_id LIMIT $3",
            )
            .bind(after)
            .bind(week_bounds(at).0)
            .bind(REBUILD_BATCH)
            .fetch_all(pool)
            .await
        }
    }
}

/// The best `limit` users on a board, from Postgres.
async fn top(
    pool: &PgPool,
    period: Period,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
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
    pools: &[PgPool],
    period: Period,
    now: DateTime<Utc>,
    user: Uuid,
    limit: i64,
) -> Result<(Vec<Entry>, Option<(i64, i64)>), sqlx::Error> {
    // Each shard's best, merged: the overall best `limit` are among them.
    let mut all = Vec::new();
    for pool in pools {
        all.extend(top(pool, period, now, limit).await?);
    }
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // A user whose bucket is moving can be on two shards for a moment.
    all.dedup_by_key(|(id, _)| *id);
    all.truncate(usize::try_from(limit).unwrap_or(0));
    let mut mine = None;
    for pool in pools {
        let xp: Option<i64> = match period {
            Period::AllTime => {
                sqlx::query_scalar("SELECT xp FROM user_progress WHERE user_id = $1 AND xp > 0")
                    .bind(user)
                    .fetch_optional(pool)
                    .await?
            }
            Period::Weekly => {
                sqlx::query_scalar(
                    "SELECT xp FROM user_weekly_xp WHERE user_id = $1 AND week = $2 AND xp > 0",
                )
                .bind(user)
                .bind(week_bounds(now).0)
                .fetch_optional(pool)
                .await?
            }
        };
        if xp.is_some() {
            mine = xp;
            break;
        }
    }
    let Some(my_xp) = mine else {
        return Ok((all, None));
    };
    let mut ahead = 0_i64;
    for pool in pools {
        ahead += match period {
            Period::AllTime => {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM user_progress WHERE xp > $1")
                    .bind(my_xp)
                    .fetch_one(pool)
                    .await?
            }
            Period::Weekly => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM user_weekly_xp WHERE week = $1 AND xp > $2",
                )
                .bind(week_bounds(now).0)
                .bind(my_xp)
                .fetch_one(pool)
                .await?
            }
        };
    }
    Ok((all, Some((ahead + 1, my_xp))))
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
