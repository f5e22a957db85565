//! Periodic housekeeping, run by every instance (each job is idempotent and
//! cheap when there is nothing to do; partition creation is serialized by an
//! advisory lock):
//! - create the partitions of the current and next periods;
//! - form the week's leagues after the Monday reset (`leagues::roll`);
//! - finish account deletions interrupted midway (`auth::erase`);
//! - report rows stuck in default partitions (`db_partition_default_rows`);
//! - purge idempotency keys past their retention, expired refresh tokens and
//!   account deletion markers older than an hour.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::app::AppState;
use crate::db::partitions;
use crate::metrics::Metrics;

/// One round of every job, on main and on every shard. Failures are logged,
/// never fatal: the next round retries.
pub async fn run_once(state: &AppState) {
    let (db, metrics) = (&state.db, &state.metrics);
    for shard in db.per_user_dbs() {
        per_database(shard.name(), shard.write(), metrics).await;
    }
    // Account deletions that a request started and could not finish.
    match crate::auth::erase::finish_pending(state).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(finished = n, "finished interrupted account deletions"),
        Err(e) => tracing::warn!(error = %e, "could not finish interrupted account deletions"),
    }
    // Weekly leagues, once per week (a no-op until the reset).
    if let Err(e) = crate::leagues::roll(db, chrono::Utc::now()).await {
        tracing::warn!(error = %e, "could not form this week's leagues");
    }
    let pool = db.write();
    match sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'")
        .execute(pool)
        .await
    {
        Ok(done) if done.rows_affected() > 0 => {
            tracing::info!(
                deleted = done.rows_affected(),
                "purged expired refresh tokens"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not purge expired refresh tokens"),
    }
}

/// Partitions and idempotency keys, which every database holding per-user
/// rows has.
async fn per_database(shard: &str, pool: &PgPool, metrics: &Metrics) {
    match partitions::ensure(pool, partitions::DEFAULT_AHEAD).await {
        Ok(created) if !created.is_empty() => {
            tracing::info!(shard, ?created, "created partitions ahead of time");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(shard, error = %e, "could not create partitions ahead of time"),
    }
    let tables = partitions::present(pool).await.unwrap_or_default();
    for spec in &tables {
        match partitions::default_rows(pool, spec).await {
            Ok(rows) => {
                // Labelled by table: the sum over shards would hide which
                // one; the first shard with stray rows is what matters.
                if rows > 0 || shard == crate::db::shards::MAIN {
                    metrics
                        .partition_default_rows
                        .with_label_values(&[spec.table])
                        .set(rows);
                }
                if rows > 0 {
                    tracing::warn!(
                        shard,
                        table = spec.table,
                        rows,
                        "rows in the default partition: a partition is missing (run `refbackend partitions ensure`)"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(shard, table = spec.table, error = %e, "could not count default-partition rows")
            }
        }
    }
    // Deletion markers outlive any request that saw the account alive.
    match sqlx::query("DELETE FROM erased_users WHERE erased_at < now() - interval '1 hour'")
        .execute(pool)
        .await
    {
        Ok(done) if done.rows_affected() > 0 => {
            tracing::info!(
                shard,
                deleted = done.rows_affected(),
                "purged account deletion markers"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(shard, error = %e, "could not purge account deletion markers"),
    }
    match crate::http::idempotency::purge_expired(pool).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "purged expired idempotency keys"),
        Ok(_) => {}
        Err(e) => tracing::warn!(shard, error = %e, "could not purge idempotency keys"),
    }
}

/// Runs [`run_once`] every `interval` until `stop` turns true.
pub async fn run(state: AppState, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; start-up already ran a round.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => run_once(&state).await,
        }
    }
}
