//! Stage 4: per-user sharding over virtual buckets.
//!
//! A user's per-user rows (attempts, review cards, progress, skill stats,
//! weekly XP and the idempotency keys of their per-user writes) live on one
//! shard. Which one: `bucket = SHA-256(user id)[0..2] mod 1024`
//! ([`bucket_of`], and `shard_bucket()` in SQL), and the bucket's shard is
//! read from `shard_map` on `main` (no row: `main`). `main` is a shard like
//! the others, so a deployment starts with every bucket on `main` and moves
//! buckets out as shards are added (`refbackend shards move`, [`mover`]).
//!
//! Accounts, refresh tokens, reference data and all of CivicQ stay on `main`:
//! sign-in needs the account wherever the user's bucket is, and CivicQ's vote
//! counts must stay exact within one transaction per city. `exercises` is
//! reference data with a read-only copy on every shard ([`sync_reference`]),
//! so per-user queries join it locally; no query spans two databases.
//!
//! Every per-user write transaction starts with [`UserDb::enter`]: the write
//! fence (`shard_write_guard()`, migrations/0013_sharding.sql) makes a bucket
//! move safe however stale an instance's copy of the map is.
//!
//! The map is loaded at start-up, reloaded when a move announces a flip (the
//! cache invalidation channel carries `shardmap`), when a write meets a
//! `moved` fence, and every [`MAP_REFRESH`] in any case.

pub mod mover;

use std::ops::Deref;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use super::Db;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;

/// The name of the main database as a shard.
pub const MAIN: &str = "main";
/// Virtual buckets: the unit of placement and of moves.
pub const BUCKETS: u16 = 1024;
/// Advisory-lock class of bucket fences (`shard_write_guard`): `SH`.
pub const FENCE_LOCK_CLASS: i32 = 21320;
/// The longest an instance goes without reloading the map.
pub const MAP_REFRESH: Duration = Duration::from_secs(10);
/// The message on the cache invalidation channel that asks every instance
/// to reload the map.
pub const MAP_CHANGED_MESSAGE: &str = "shardmap";

/// A bucket whose shard this instance does not know (a map row naming a
/// shard missing from its `SHARD_URLS`).
const UNKNOWN: u16 = u16::MAX;

/// The bucket of a user id; the same function as `shard_bucket()` in SQL.
pub fn bucket_of(user: Uuid) -> u16 {
    let digest = Sha256::digest(user.as_bytes());
    u16::from_be_bytes([digest[0], digest[1]]) % BUCKETS
}

/// One database that holds per-user rows.
#[derive(Clone)]
pub struct Shard {
    pub name: String,
    /// The shard's own handle (no shard set of its own).
    pub db: Db,
}

/// This instance's copy of the map.
struct MapState {
    /// bucket -> index into `members`.
    slots: Vec<u16>,
    /// When this instance saw each bucket change shard.
    changed_at: Vec<Option<Instant>>,
}

/// The shards of a deployment and this instance's copy of the map.
pub struct Shards {
    /// `main` first.
    members: Vec<Shard>,
    map: RwLock<Arc<MapState>>,
    /// How long after a bucket changed shard its reads stay on the new
    /// shard's primary: its replicas may not have replayed the copy yet, and
    /// one in rotation lags at most this behind.
    settle: Duration,
    reload: Notify,
    metrics: Metrics,
}

impl Shards {
    pub(super) fn new(members: Vec<Shard>, settle: Duration, metrics: Metrics) -> Self {
        let buckets = usize::from(BUCKETS);
        let shards = Self {
            members,
            map: RwLock::new(Arc::new(MapState {
                slots: vec![0_u16; buckets],
                changed_at: vec![None; buckets],
            })),
            settle,
            reload: Notify::new(),
            metrics,
        };
        shards.export_counts(&shards.current().slots);
        shards
    }

    pub fn members(&self) -> &[Shard] {
        &self.members
    }

    fn current(&self) -> Arc<MapState> {
        self.map
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The name of the shard holding `bucket` in this instance's map.
    pub fn shard_of(&self, bucket: u16) -> Option<&str> {
        let index = self.current().slots[usize::from(bucket % BUCKETS)];
        self.members
            .get(usize::from(index))
            .map(|s| s.name.as_str())
    }

    /// How many buckets each member holds, `main` first.
    pub fn bucket_counts(&self) -> Vec<(String, usize)> {
        let map = self.current();
        self.members
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let count = map.slots.iter().filter(|&&m| usize::from(m) == i).count();
                (s.name.clone(), count)
            })
            .collect()
    }

    fn export_counts(&self, map: &[u16]) {
        for (i, shard) in self.members.iter().enumerate() {
            let count = map.iter().filter(|&&m| usize::from(m) == i).count();
            self.metrics
                .shard_buckets
                .with_label_values(&[shard.name.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Asks the monitor to reload the map now.
    pub fn request_reload(&self) {
        self.reload.notify_one();
    }

    /// Resolves when a reload was requested.
    pub async fn reload_requested(&self) {
        self.reload.notified().await;
    }
}

/// The database holding one user's rows. Derefs to that shard's [`Db`], so
/// `db.user(id)?.write()`, `.read(..)`, `.read_consistent(..)` work as on
/// any database.
pub struct UserDb {
    db: Db,
    bucket: u16,
    /// The bucket changed shard moments ago (see [`Shards::settle`]).
    recently_moved: bool,
    /// Set when sharding is configured: writes must pass the fence.
    shards: Option<Arc<Shards>>,
}

impl Deref for UserDb {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

impl UserDb {
    pub fn bucket(&self) -> u16 {
        self.bucket
    }

    /// Whether the bucket came to this shard so recently that its replicas
    /// may not have the copy yet: reads then go to the primary.
    pub fn recently_moved(&self) -> bool {
        self.recently_moved
    }

    /// Whether sharding is configured (writes pass the fence).
    pub fn is_sharded(&self) -> bool {
        self.shards.is_some()
    }

    /// The shard's name (`main` without sharding).
    pub fn shard(&self) -> &str {
        self.db.name()
    }

    /// Every per-user write transaction passes the bucket's write fence on
    /// this shard, anywhere before it commits: `SELECT
    /// shard_write_guard(bucket, user)` alone ([`UserDb::enter`]) or inside
    /// one of its statements (the bucket from here, the answer to
    /// [`UserDb::check_fence`]). The guard's decision and the transaction's
    /// writes commit (or roll back) together, so where in the transaction it
    /// runs does not matter. None without sharding: no fence.
    pub fn fence_bucket(&self) -> Option<i32> {
        self.shards.as_ref().map(|_| i32::from(self.bucket))
    }

    /// Passes the write fence in a statement of its own (see
    /// [`UserDb::fence_bucket`]). A no-op without sharding.
    pub async fn enter(&self, conn: &mut PgConnection, user: Uuid) -> AppResult<()> {
        let Some(bucket) = self.fence_bucket() else {
            return Ok(());
        };
        let fence: String = sqlx::query_scalar("SELECT shard_write_guard($1, $2)")
            .bind(bucket)
            .bind(user)
            .fetch_one(conn)
            .await?;
        self.check_fence(&fence)
    }

    /// What the fence said: `owned` or `moving`, write; `moved`: the bucket
    /// lives elsewhere now, so nothing may be written here: the map is
    /// reloaded and the request gets a 503 with Retry-After (its transaction
    /// rolls back).
    /// `erased`: the account is being deleted (`auth::erase`): a 401.
    pub fn check_fence(&self, fence: &str) -> AppResult<()> {
        let Some(shards) = &self.shards else {
            return Ok(());
        };
        if fence == "erased" {
            return Err(AppError::unauthenticated("This account was deleted.", true));
        }
        if fence == "moved" {
            shards
                .metrics
                .shard_write_refusals_total
                .with_label_values(&["moved"])
                .inc();
            shards.request_reload();
            return Err(AppError::Unavailable(
                "This account's data has just moved to another database; retry in a moment.".into(),
            ));
        }
        Ok(())
    }
}

impl Db {
    /// The database holding `user`'s per-user rows. Without sharding, this
    /// database. A 503 if the user's bucket maps to a shard this instance was
    /// not configured with.
    pub fn user(&self, user: Uuid) -> AppResult<UserDb> {
        let bucket = bucket_of(user);
        let Some(shards) = &self.shards else {
            return Ok(UserDb {
                db: self.clone(),
                bucket,
                recently_moved: false,
                shards: None,
            });
        };
        let map = shards.current();
        let index = map.slots[usize::from(bucket)];
        let recently_moved =
            map.changed_at[usize::from(bucket)].is_some_and(|at| at.elapsed() < shards.settle);
        let Some(member) = shards.members.get(usize::from(index)) else {
            shards
                .metrics
                .shard_write_refusals_total
                .with_label_values(&["unknown_shard"])
                .inc();
            return Err(AppError::Unavailable(format!(
                "Bucket {bucket} is on a shard this instance does not know (check SHARD_URLS)."
            )));
        };
        Ok(UserDb {
            db: member.db.clone(),
            bucket,
            recently_moved,
            shards: Some(shards.clone()),
        })
    }

    /// The shard set, when sharding is configured.
    pub fn shards(&self) -> Option<&Arc<Shards>> {
        self.shards.as_ref()
    }

    /// Every database that holds per-user rows, `main` first (just this one
    /// without sharding). Aggregates over all users (leaderboards, stats,
    /// maintenance) visit each and combine the answers.
    pub fn per_user_dbs(&self) -> Vec<Db> {
        match &self.shards {
            Some(shards) => shards.members.iter().map(|s| s.db.clone()).collect(),
            None => vec![self.clone()],
        }
    }

    /// The configured shard named `name` (`main` included).
    pub fn shard_named(&self, name: &str) -> Option<Db> {
        if name == MAIN {
            return Some(match &self.shards {
                Some(shards) => shards.members[0].db.clone(),
                None => self.clone(),
            });
        }
        self.shards
            .as_ref()?
            .members
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.db.clone())
    }

    /// Reloads the bucket map from `main`'s primary. A no-op without sharding.
    pub async fn reload_shard_map(&self) -> Result<(), sqlx::Error> {
        let Some(shards) = &self.shards else {
            return Ok(());
        };
        let rows: Vec<(i32, String)> = sqlx::query_as("SELECT bucket, shard FROM shard_map")
            .fetch_all(self.read_fresh())
            .await?;
        let mut map = vec![0_u16; usize::from(BUCKETS)];
        for (bucket, name) in rows {
            let Some(slot) = usize::try_from(bucket).ok().and_then(|b| map.get_mut(b)) else {
                continue;
            };
            *slot = match shards.members.iter().position(|s| s.name == name) {
                Some(i) => u16::try_from(i).unwrap_or(UNKNOWN),
                None => {
                    tracing::error!(bucket, shard = %name, "the shard map names a shard missing from SHARD_URLS");
                    UNKNOWN
                }
            };
        }
        shards.export_counts(&map);
        let previous = shards.current();
        let now = Instant::now();
        let changed_at = map
            .iter()
            .zip(previous.slots.iter().zip(&previous.changed_at))
            .map(|(new, (old, at))| if new == old { *at } else { Some(now) })
            .collect();
        if let Ok(mut slot) = shards.map.write() {
            *slot = Arc::new(MapState {
                slots: map,
                changed_at,
            });
        }
        Ok(())
    }
}

/// Copies main's `exercises` to a shard (upsert by id): shards hold a
/// read-only copy of the reference table so that per-user queries join it
/// locally and attempts keep their foreign key. Called by `refbackend seed`
/// (the only writer of exercises) and `refbackend migrate`, and at start-up
/// with `MIGRATE_ON_START`. Returns the rows copied.
pub async fn sync_reference(main: &PgPool, shard: &PgPool) -> Result<u64, sqlx::Error> {
    const COLUMNS: &str = "id, slug, kind, prompt, instructions, infinitive, person, tense, \
                           trigger, difficulty, tags, choices, answer, accepted, explanation, \
                           created_at, updated_at";
    let mut source = main.acquire().await?;
    let mut out = source
        .copy_out_raw(&format!(
            "COPY (SELECT {COLUMNS} FROM exercises ORDER BY id) TO STDOUT (FORMAT binary)"
        ))
        .await?;
    let mut tx = shard.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE exercises_incoming (LIKE exercises INCLUDING DEFAULTS) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await?;
    let mut sink = tx
        .copy_in_raw(&format!(
            "COPY exercises_incoming ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
        sink.send(chunk?).await?;
    }
    sink.finish().await?;
    let copied = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO exercises ({COLUMNS}) SELECT {COLUMNS} FROM exercises_incoming
         ON CONFLICT (id) DO UPDATE SET
            slug = EXCLUDED.slug, kind = EXCLUDED.kind, prompt = EXCLUDED.prompt,
            instructions = EXCLUDED.instructions, infinitive = EXCLUDED.infinitive,
            person = EXCLUDED.person, tense = EXCLUDED.tense, trigger = EXCLUDED.trigger,
            difficulty = EXCLUDED.difficulty, tags = EXCLUDED.tags, choices = EXCLUDED.choices,
            answer = EXCLUDED.answer, accepted = EXCLUDED.accepted,
            explanation = EXCLUDED.explanation, updated_at = EXCLUDED.updated_at
          WHERE (exercises.*) IS DISTINCT FROM (EXCLUDED.*)"
    )))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_spread_evenly_and_never_reach_the_bucket_count() {
        let mut counts = vec![0_u32; usize::from(BUCKETS)];
        for _ in 0..102_400 {
            let bucket = bucket_of(Uuid::now_v7());
            assert!(bucket < BUCKETS);
            counts[usize::from(bucket)] += 1;
        }
        // 100 per bucket expected; a fair hash stays well within 50..160.
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        assert!(min >= 50 && max <= 160, "min {min}, max {max}");
    }

    #[test]
    fn a_user_always_gets_the_same_bucket() {
        let id = Uuid::parse_str("01a24ca5-e4fe-77e0-85d2-8bf36393d6f5").expect("uuid");
        assert_eq!(bucket_of(id), bucket_of(id));
    }
}
