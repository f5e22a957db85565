//! Online bucket moves: `refbackend shards move --bucket N --to SHARD`.
//!
//! 1. **Record** the move in `shard_moves` on main (phase `copying`), so a
//!    crashed move is resumed by running the same command again.
//! 2. **Fence `moving`** on the source, under the bucket's advisory lock in
//!    exclusive mode (it waits for the bucket's in-flight writes): from then
//!    on every write to the bucket on the source records its user in
//!    `shard_move_dirty`.
//! 3. **Bulk copy** the bucket's users (listed from main's `users`) to the
//!    target, in batches; writes go on meanwhile.
//! 4. **Catch up** without blocking anyone: take the dirty users and copy them
//!    again, a few rounds, until few are left.
//! 5. **Final catch-up and fence**, the only pause: take the lock exclusively
//!    (new writes of the bucket wait), copy the last dirty users, set the
//!    source fence to `moved`, clear any old fence on the target, release.
//!    Writes that waited see `moved` and get a 503 with Retry-After.
//! 6. **Flip** the map on main (phase `flipped`) and announce it on Redis;
//!    instances reload it and send the bucket's reads and writes to the
//!    target.
//! 7. **Delete the old copy** on the source after a grace period (instances
//!    still reading the old map read a complete copy meanwhile), and forget
//!    the move.
//!
//! Copies are "delete the users' rows on the target, COPY them in" in one
//! target transaction per batch, so every step can be repeated: a crash at any
//! point leaves the source complete and readable until the flip, the target
//! complete after it, and the command resumable.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{FENCE_LOCK_CLASS, MAIN};
use crate::db::Db;

/// The per-user tables, each keyed by `user_id`.
pub const PER_USER_TABLES: &[&str] = &[
    "user_progress",
    "user_skill_stats",
    "user_weekly_xp",
    "review_cards",
    "attempts",
    "idempotency_keys",
    "user_achievements",
    "erased_users",
];

/// Users copied per target transaction.
const BATCH_USERS: usize = 500;
/// Catch-up rounds before the final, blocking one.
const CATCH_UP_ROUNDS: usize = 6;
/// A catch-up round this small is the last before the final one.
const FEW_DIRTY: usize = 50;

#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// How long to keep the old copy after the flip before deleting it.
    pub grace: Duration,
    /// Where to announce the flip (`REDIS_URL`, `REDIS_KEY_PREFIX`); None:
    /// instances notice within their refresh interval.
    pub announce: Option<(String, String)>,
}

#[derive(Debug, Default, Serialize)]
pub struct MoveReport {
    pub bucket: u16,
    pub source: String,
    pub target: String,
    /// Whether this run resumed a move a previous run had started.
    pub resumed: bool,
    pub users: usize,
    pub rows_copied: u64,
    pub catch_up_rounds: usize,
    pub final_users: usize,
    /// How long the bucket's writes were held by the exclusive lock.
    pub lock_held_ms: f64,
    /// From taking the lock to the map flip: the bucket's write pause as an
    /// instance that reloads the map at once sees it.
    pub write_pause_ms: f64,
    pub rows_deleted: u64,
    pub total_ms: f64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Moves `bucket` to the shard `target`, or resumes the move in progress.
pub async fn move_bucket(
    db: &Db,
    bucket: u16,
    target: &str,
    options: &MoveOptions,
) -> anyhow::Result<MoveReport> {
    let started = Instant::now();
    if bucket >= super::BUCKETS {
        bail!("bucket {bucket} does not exist (0..{})", super::BUCKETS);
    }
    let bucket_key = i32::from(bucket);
    let main = db.write();
    let target_db = db
        .shard_named(target)
        .with_context(|| format!("no shard named {target} in SHARD_URLS"))?;

    let mut report = MoveReport {
        bucket,
        target: target.to_owned(),
        ..MoveReport::default()
    };
    let existing: Option<(String, String, String)> =
        sqlx::query_as("SELECT source, target, phase FROM shard_moves WHERE bucket = $1")
            .bind(bucket_key)
            .fetch_optional(main)
            .await?;
    let (source, mut phase) = match existing {
        Some((source, moving_to, phase)) => {
            if moving_to != target {
                bail!(
                    "bucket {bucket} is being moved from {source} to {moving_to}; finish that move first (--to {moving_to})"
                );
            }
            report.resumed = true;
            (source, phase)
        }
        None => {
            let current: Option<String> =
                sqlx::query_scalar("SELECT shard FROM shard_map WHERE bucket = $1")
                    .bind(bucket_key)
                    .fetch_optional(main)
                    .await?;
            let current = current.unwrap_or_else(|| MAIN.to_owned());
            if current == target {
                report.source = current;
                report.total_ms = ms(started.elapsed());
                return Ok(report);
            }
            sqlx::query(
                "INSERT INTO shard_moves (bucket, source, target, phase) VALUES ($1, $2, $3, 'copying')",
            )
            .bind(bucket_key)
            .bind(&current)
            .bind(target)
            .execute(main)
            .await?;
            (current, "copying".to_owned())
        }
    };
    report.source.clone_from(&source);
    let source_db = db
        .shard_named(&source)
        .with_context(|| format!("no shard named {source} in SHARD_URLS"))?;
    let (from, to) = (source_db.write(), target_db.write());

    if phase == "copying" {
        // 2. The `moving` fence, set while no write of the bucket is in flight.
        // The lock's connection is detached from the pool: if this command
        // dies (or its future is dropped), the connection closes and the
        // session's lock goes with it, instead of lingering in the pool.
        let mut lock = from.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(FENCE_LOCK_CLASS)
            .bind(bucket_key)
            .execute(&mut lock)
            .await?;
        let fenced = async {
            let mut tx = sqlx::Connection::begin(&mut lock).await?;
            set_fence(&mut tx, bucket_key, Some("moving")).await?;
            sqlx::query("DELETE FROM shard_move_dirty WHERE bucket = $1")
                .bind(bucket_key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        unlock(&mut lock, bucket_key).await?;
        fenced?;

        // 3. Bulk copy, into partitions like the source's.
        copy_partitions(from, to).await?;
        let tables = table_columns(from).await?;
        let users = bucket_users(main, bucket_key).await?;
        report.users = users.len();
        for batch in users.chunks(BATCH_USERS) {
            report.rows_copied += copy_users(from, to, &tables, batch).await?;
        }

        // 4. Catch-up rounds, writes flowing.
        for _ in 0..CATCH_UP_ROUNDS {
            let dirty = take_dirty(from, bucket_key).await?;
            if dirty.is_empty() {
                break;
            }
            report.catch_up_rounds += 1;
            for batch in dirty.chunks(BATCH_USERS) {
                report.rows_copied += copy_users(from, to, &tables, batch).await?;
            }
            if dirty.len() < FEW_DIRTY {
                break;
            }
        }

        // 5. The pause: last dirty users, then the fences.
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(FENCE_LOCK_CLASS)
            .bind(bucket_key)
            .execute(&mut lock)
            .await?;
        let paused = Instant::now();
        let last_round = async {
            let dirty = take_dirty(from, bucket_key).await?;
            let mut copied = 0;
            for batch in dirty.chunks(BATCH_USERS) {
                copied += copy_users(from, to, &tables, batch).await?;
            }
            let mut target_tx = to.begin().await?;
            set_fence(&mut target_tx, bucket_key, None).await?;
            target_tx.commit().await?;
            let mut tx = sqlx::Connection::begin(&mut lock).await?;
            set_fence(&mut tx, bucket_key, Some("moved")).await?;
            tx.commit().await?;
            anyhow::Ok((dirty.len(), copied))
        }
        .await;
        unlock(&mut lock, bucket_key).await?;
        report.lock_held_ms = ms(paused.elapsed());
        let (final_users, copied) = last_round?;
        report.final_users = final_users;
        report.rows_copied += copied;
        let _ = sqlx::Connection::close(lock).await;

        // 6. Flip.
        let mut tx = main.begin().await?;
        if target == MAIN {
            sqlx::query("DELETE FROM shard_map WHERE bucket = $1")
                .bind(bucket_key)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO shard_map (bucket, shard) VALUES ($1, $2)
                 ON CONFLICT (bucket) DO UPDATE SET shard = EXCLUDED.shard, moved_at = now()",
            )
            .bind(bucket_key)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE shard_moves SET phase = 'flipped', updated_at = now() WHERE bucket = $1",
        )
        .bind(bucket_key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        report.write_pause_ms = ms(paused.elapsed());
        if let Some((url, prefix)) = &options.announce
            && let Err(e) = crate::cache::announce_shard_map(url, prefix).await
        {
            tracing::warn!(error = %e, "could not announce the new shard map; instances reload it within their refresh interval");
        }
        phase = "flipped".to_owned();
    }

    if phase == "flipped" {
        // 7. The old copy goes once every instance has the new map.
        tokio::time::sleep(options.grace).await;
        let mut users = bucket_users(main, bucket_key).await?;
        // And whoever the source still holds in the bucket without an
        // account on main any more (deleted on the target after the flip,
        // while this copy was kept for the grace period).
        let left: Vec<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM user_progress WHERE shard_bucket(user_id) = $1",
        )
        .bind(bucket_key)
        .fetch_all(from)
        .await?;
        users.extend(left);
        users.sort_unstable();
        users.dedup();
        for batch in users.chunks(BATCH_USERS) {
            report.rows_deleted += delete_users(from, batch).await?;
        }
        sqlx::query("DELETE FROM shard_move_dirty WHERE bucket = $1")
            .bind(bucket_key)
            .execute(from)
            .await?;
        sqlx::query("DELETE FROM shard_moves WHERE bucket = $1")
            .bind(bucket_key)
            .execute(main)
            .await?;
    }
    report.total_ms = ms(started.elapsed());
    Ok(report)
}

async fn unlock(lock: &mut sqlx::PgConnection, bucket: i32) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(FENCE_LOCK_CLASS)
        .bind(bucket)
        .execute(lock)
        .await
        .map(|_| ())
}

async fn set_fence(
    tx: &mut Transaction<'_, Postgres>,
    bucket: i32,
    state: Option<&str>,
) -> Result<(), sqlx::Error> {
    match state {
        Some(state) => sqlx::query(
            "INSERT INTO shard_fence (bucket, state) VALUES ($1, $2)
             ON CONFLICT (bucket) DO UPDATE SET state = EXCLUDED.state",
        )
        .bind(bucket)
        .bind(state)
        .execute(&mut **tx)
        .await
        .map(|_| ()),
        None => sqlx::query("DELETE FROM shard_fence WHERE bucket = $1")
            .bind(bucket)
            .execute(&mut **tx)
            .await
            .map(|_| ()),
    }
}

/// Creates on the target every partition of `attempts` the source has, so
/// copied history lands in its own quarter, not in the target's default
/// partition (which maintenance would report, and which every query of a
/// learner's history would scan). Under the advisory lock of partition
/// maintenance, as `partitions::ensure` takes it.
async fn copy_partitions(from: &PgPool, to: &PgPool) -> anyhow::Result<()> {
    let wanted: Vec<_> = crate::db::partitions::list(from)
        .await?
        .into_iter()
        .filter(|p| p.table == "attempts" && p.bounds != "DEFAULT")
        .collect();
    let mut tx = to.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::db::partitions::LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    for partition in wanted {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&partition.partition)
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            continue;
        }
        // The name and bounds come from the source's catalog, where the
        // service created them; the name is still quoted.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE \"{}\" PARTITION OF attempts {}",
            partition.partition.replace('"', ""),
            partition.bounds
        )))
        .execute(&mut *tx)
        .await
        .with_context(|| {
            format!(
                "creating partition {} on the target (rows of that range in its default partition? run `refbackend partitions ensure` there)",
                partition.partition
            )
        })?;
    }
    tx.commit().await?;
    Ok(())
}

/// The bucket's users, from main's accounts (index `users_shard_bucket`).
pub async fn bucket_users(main: &PgPool, bucket: i32) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM users WHERE shard_bucket(id) = $1 ORDER BY id")
        .bind(bucket)
        .fetch_all(main)
        .await
}

/// Takes (and clears) the users written since the last look.
async fn take_dirty(source: &PgPool, bucket: i32) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("DELETE FROM shard_move_dirty WHERE bucket = $1 RETURNING user_id")
        .bind(bucket)
        .fetch_all(source)
        .await
}

/// `'{id,id}'::uuid[]`: COPY takes no parameters, and UUIDs print safely.
fn uuid_array(users: &[Uuid]) -> String {
    let ids: Vec<String> = users.iter().map(Uuid::to_string).collect();
    format!("'{{{}}}'::uuid[]", ids.join(","))
}

/// Each per-user table with its column list, from the source's catalog
/// (read once per move).
async fn table_columns(pool: &PgPool) -> Result<Vec<(&'static str, String)>, sqlx::Error> {
    let mut out = Vec::with_capacity(PER_USER_TABLES.len());
    for table in PER_USER_TABLES {
        out.push((*table, columns(pool, table).await?));
    }
    Ok(out)
}

/// The table's columns in order, from the source's catalog.
async fn columns(pool: &PgPool, table: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
           FROM pg_attribute
          WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .bind(table)
    .fetch_one(pool)
    .await
}

/// Replaces `users`' rows in every per-user table of `to` with their rows in
/// `from`, in one transaction on `to`. Returns the rows copied.
pub async fn copy_users(
    from: &PgPool,
    to: &PgPool,
    tables: &[(&str, String)],
    users: &[Uuid],
) -> anyhow::Result<u64> {
    if users.is_empty() {
        return Ok(0);
    }
    let ids = uuid_array(users);
    let mut source = from.acquire().await?;
    let mut tx = to.begin().await?;
    let mut copied = 0;
    for (table, cols) in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = ANY({ids})"
        )))
        .execute(&mut *tx)
        .await?;
        let mut out = source
            .copy_out_raw(&format!(
                "COPY (SELECT {cols} FROM {table} WHERE user_id = ANY({ids})) TO STDOUT (FORMAT binary)"
            ))
            .await?;
        let mut sink = tx
            .copy_in_raw(&format!("COPY {table} ({cols}) FROM STDIN (FORMAT binary)"))
            .await?;
        while let Some(chunk) = out.next().await {
            sink.send(chunk?).await?;
        }
        copied += sink.finish().await?;
    }
    tx.commit().await?;
    Ok(copied)
}

/// Deletes `users`' rows from every per-user table of `pool`.
async fn delete_users(pool: &PgPool, users: &[Uuid]) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut deleted = 0;
    for table in PER_USER_TABLES {
        deleted += sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = ANY($1)"
        )))
        .bind(users)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(deleted)
}

/// What `shards list` prints: each shard's buckets, users and size.
#[derive(Debug, Serialize)]
pub struct ShardUsage {
    pub shard: String,
    pub buckets: usize,
    pub users: i64,
    /// Bytes of the per-user tables (with indexes and partitions).
    pub bytes: i64,
}

/// Buckets, users and per-user bytes of every shard, and the moves in progress.
pub async fn usage(
    db: &Db,
) -> anyhow::Result<(Vec<ShardUsage>, Vec<(i32, String, String, String)>)> {
    let main = db.write();
    let map: Vec<(i32, String)> = sqlx::query_as("SELECT bucket, shard FROM shard_map")
        .fetch_all(main)
        .await?;
    let users_per_bucket: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT shard_bucket(id), count(*) FROM users
                  WHERE id <> '00000000-0000-0000-0000-000000000000' GROUP BY 1",
    )
    .fetch_all(main)
    .await?;
    let shard_of = |bucket: i32| -> String {
        map.iter()
            .find(|(b, _)| *b == bucket)
            .map_or_else(|| MAIN.to_owned(), |(_, s)| s.clone())
    };
    let mut out = Vec::new();
    for shard in db.per_user_dbs() {
        let name = shard.name().to_owned();
        let buckets = (0..i32::from(super::BUCKETS))
            .filter(|b| shard_of(*b) == name)
            .count();
        let users = users_per_bucket
            .iter()
            .filter(|(b, _)| shard_of(*b) == name)
            .map(|(_, n)| n)
            .sum();
        let bytes: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
               FROM pg_class c
              WHERE c.relkind IN ('r', 'p')
                AND (c.relname = ANY($1)
                     OR c.oid IN (SELECT inhrelid FROM pg_inherits
                                   WHERE inhparent = 'attempts'::regclass))",
        )
        .bind(PER_USER_TABLES)
        .fetch_one(shard.write())
        .await?;
        out.push(ShardUsage {
            shard: name,
            buckets,
            users,
            bytes,
        });
    }
    let moves =
        sqlx::query_as("SELECT bucket, source, target, phase FROM shard_moves ORDER BY bucket")
            .fetch_all(main)
            .await?;
    Ok((out, moves))
}

/// A plan that evens users out across shards: repeatedly move the fullest
/// shard's bucket whose users best close the gap to the emptiest shard.
pub async fn rebalance_plan(db: &Db) -> anyhow::Result<Vec<(u16, String, String)>> {
    let main = db.write();
    let names: Vec<String> = db
        .per_user_dbs()
        .iter()
        .map(|d| d.name().to_owned())
        .collect();
    let map: Vec<(i32, String)> = sqlx::query_as("SELECT bucket, shard FROM shard_map")
        .fetch_all(main)
        .await?;
    let users_per_bucket: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT shard_bucket(id), count(*) FROM users
                  WHERE id <> '00000000-0000-0000-0000-000000000000' GROUP BY 1",
    )
    .fetch_all(main)
    .await?;
    let mut placement: Vec<(u16, usize, i64)> = (0..super::BUCKETS)
        .map(|b| {
            let shard = map
                .iter()
                .find(|(mb, _)| *mb == i32::from(b))
                .map_or(MAIN, |(_, s)| s.as_str());
            let index = names.iter().position(|n| n == shard).unwrap_or(0);
            let users = users_per_bucket
                .iter()
                .find(|(ub, _)| *ub == i32::from(b))
                .map_or(0, |(_, n)| *n);
            (b, index, users)
        })
        .collect();
    Ok(plan_moves(&names, &mut placement))
}

/// The planning step of [`rebalance_plan`], pure. `placement` is
/// (bucket, shard index, users) and is updated as moves are planned.
pub fn plan_moves(
    names: &[String],
    placement: &mut [(u16, usize, i64)],
) -> Vec<(u16, String, String)> {
    let mut moves = Vec::new();
    if names.len() < 2 {
        return moves;
    }
    for _ in 0..usize::from(super::BUCKETS) {
        let mut load = vec![0_i64; names.len()];
        for (_, shard, users) in placement.iter() {
            load[*shard] += users;
        }
        let (Some(full), Some(empty)) = (
            (0..names.len()).max_by_key(|&i| load[i]),
            (0..names.len()).min_by_key(|&i| load[i]),
        ) else {
            break;
        };
        let gap = load[full] - load[empty];
        // The bucket of the fullest shard whose move leaves the smallest gap,
        // if it shrinks the gap at all.
        let best = placement
            .iter_mut()
            .filter(|(_, shard, users)| *shard == full && *users > 0 && 2 * *users < gap + *users)
            .min_by_key(|(_, _, users)| (gap - 2 * *users).abs());
        let Some(best) = best else {
            break;
        };
        if (gap - 2 * best.2).abs() >= gap {
            break;
        }
        best.1 = empty;
        moves.push((best.0, names[full].clone(), names[empty].clone()));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebalance_plan_evens_users_out_and_stops_when_it_cannot_improve() {
        let names: Vec<String> = ["main", "s1", "s2"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        // Every bucket on main, 10 users each.
        let mut placement: Vec<(u16, usize, i64)> = (0..30).map(|b| (b, 0, 10)).collect();
        let moves = plan_moves(&names, &mut placement);
        let mut load = [0_i64; 3];
        for (_, shard, users) in &placement {
            load[*shard] += users;
        }
        assert_eq!(load, [100, 100, 100], "{moves:?}");
        assert_eq!(moves.len(), 20);
        // Balanced already: nothing to do.
        assert!(plan_moves(&names, &mut placement).is_empty());
    }

    #[test]
    fn copy_statements_quote_user_ids_as_a_uuid_array() {
        let id = Uuid::nil();
        assert_eq!(
            uuid_array(&[id, id]),
            "'{00000000-0000-0000-0000-000000000000,00000000-0000-0000-0000-000000000000}'::uuid[]"
        );
    }
}
