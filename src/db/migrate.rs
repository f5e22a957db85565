//! Schema migrations (forward-only SQL): `migrations/` on main,
//! `migrations-shard/` on every shard (stage 4, [`super::shards`]).
//!
//! sqlx's migrator holds a Postgres advisory lock while it runs, so several
//! instances starting at once with `MIGRATE_ON_START=true` apply each migration
//! exactly once: the others wait, then find nothing left to do. The lock is
//! per database, so each shard is migrated under its own.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use super::Db;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
pub static SHARD_MIGRATOR: Migrator = sqlx::migrate!("./migrations-shard");

/// Migrates main (this pool's database).
pub async fn run(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Migrates a shard's database.
pub async fn run_shard(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    SHARD_MIGRATOR.run(pool).await
}

/// Migrates main and every configured shard, then brings each shard's copy
/// of the reference data up to date.
pub async fn run_all(db: &Db) -> anyhow::Result<()> {
    use anyhow::Context;
    run(db.write()).await.context("migrating main")?;
    for shard in db.per_user_dbs().iter().skip(1) {
        run_shard(shard.write())
            .await
            .with_context(|| format!("migrating shard {}", shard.name()))?;
        super::shards::sync_reference(db.write(), shard.write())
            .await
            .with_context(|| format!("copying reference data to shard {}", shard.name()))?;
    }
    Ok(())
}
