//! Building one connection pool from its [`PoolConfig`].

use std::str::FromStr;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{PoolConfig, Secret};

/// Whether sessions of a pool may write. Replica pools are read-only at the
/// session level, so a write routed to the read path fails loudly, even on a
/// replica that was promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// Creates a pool without connecting: connections are opened on first use (and
/// `min_idle` of them in the background), so the service can start while a
/// database is still coming up and report it in `/ready` instead of crashing.
pub fn lazy_pool(url: &Secret, config: &PoolConfig, access: Access) -> Result<PgPool, sqlx::Error> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let mut options = PgConnectOptions::from_str(url.expose())?
        .application_name("refbackend")
        .options([("statement_timeout", statement_timeout.as_str())]);
    if access == Access::ReadOnly {
        options = options.options([("default_transaction_read_only", "on")]);
    }
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_idle)
        .acquire_timeout(config.acquire_timeout)
        .max_lifetime(config.max_lifetime)
        .idle_timeout(config.idle_timeout)
        .test_before_acquire(config.test_before_acquire)
        .connect_lazy_with(options))
}

/// `host:port` of a database URL, for labels and `/ready` (never the password).
pub fn display_addr(url: &Secret) -> String {
    match PgConnectOptions::from_str(url.expose()) {
        Ok(o) => format!("{}:{}", o.get_host(), o.get_port()),
        Err(_) => "invalid-url".to_owned(),
    }
}
