//! Schema migrations (forward-only SQL in `migrations/`).
//!
//! sqlx's migrator holds a Postgres advisory lock while it runs, so several
//! instances starting at once with `MIGRATE_ON_START=true` apply each migration
//! exactly once: the others wait, then find nothing left to do.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub async fn run(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
