//! Building one connection pool from its [`PoolConfig`].

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::config::{DatabaseConfig, PoolConfig, Secret};

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
///
/// Directly on Postgres, each session gets its statement timeout (and, on
/// replicas, `default_transaction_read_only`) as start-up options, and sqlx
/// caches prepared statements per connection.
///
/// Behind PgBouncer in transaction mode (`DB_BEHIND_PGBOUNCER`), a client
/// connection gets a server connection for one transaction at a time, and
/// PgBouncer before 1.21 (Debian 12 ships 1.18) knows nothing of prepared
/// statements. sqlx prepares every statement with a Sync before binding it,
/// so a statement outside a transaction could be prepared on one server and
/// bound on another. So, behind PgBouncer:
/// - every checkout of a connection opens a transaction (with the statement
///   timeout, read-only on replica pools) and its return commits it, so each
///   statement is prepared and executed on one server connection; an explicit
///   transaction of the caller runs inside it, and its COMMIT is the real one;
/// - no statement cache: a cached statement name would be bound on whatever
///   server connection comes next; PgBouncer's `server_reset_query_always`
///   with `DEALLOCATE ALL` drops each transaction's statements;
/// - no start-up options, which PgBouncer refuses.
pub fn lazy_pool(
    url: &Secret,
    config: &PoolConfig,
    access: Access,
    database: &DatabaseConfig,
) -> Result<PgPool, sqlx::Error> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let mut options = PgConnectOptions::from_str(url.expose())?.application_name("refbackend");
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_idle)
        .acquire_timeout(config.acquire_timeout)
        .max_lifetime(config.max_lifetime)
        .idle_timeout(config.idle_timeout)
        .test_before_acquire(config.test_before_acquire);
    if !database.behind_pgbouncer {
        options = options.options([("statement_timeout", statement_timeout.as_str())]);
        if access == Access::ReadOnly {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        return Ok(pool.connect_lazy_with(options));
    }
    options = options.statement_cache_capacity(0);
    let mode = if access == Access::ReadOnly {
        "READ ONLY"
    } else {
        "READ WRITE"
    };
    // One simple-protocol message: one round trip, no prepared statement.
    // Notices below errors are silenced for the pinning transaction only: a
    // caller's own BEGIN inside it would warn "already in progress".
    let open: Arc<str> = Arc::from(format!(
        "BEGIN {mode}; SET LOCAL statement_timeout = {statement_timeout}; \
         SET LOCAL client_min_messages = error"
    ));
    let on_connect = open.clone();
    let pool = pool
        .after_connect(move |conn, _| {
            let open = on_connect.clone();
            Box::pin(async move {
                conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(open.to_string())))
                    .await
                    .map(|_| ())
            })
        })
        .before_acquire(move |conn, _| {
            let open = open.clone();
            Box::pin(async move {
                conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(open.to_string())))
                    .await
                    .map(|_| true)
            })
        })
        .after_release(|conn, _| {
            Box::pin(async move {
                // The caller may have committed already: COMMIT outside a
                // transaction only warns, and the warning is silenced.
                let committed = conn
                    .execute(sqlx::raw_sql(
                        "SET client_min_messages = error; COMMIT; RESET client_min_messages",
                    ))
                    .await;
                if committed.is_ok() {
                    return Ok(true);
                }
                // A statement failed in the transaction (the caller has its
                // error): it can only be rolled back.
                conn.execute(sqlx::raw_sql("ROLLBACK; RESET client_min_messages"))
                    .await
                    .map(|_| true)
            })
        });
    Ok(pool.connect_lazy_with(options))
}

/// `host:port` of a database URL, for labels and `/ready` (never the password).
pub fn display_addr(url: &Secret) -> String {
    match PgConnectOptions::from_str(url.expose()) {
        Ok(o) => format!("{}:{}", o.get_host(), o.get_port()),
        Err(_) => "invalid-url".to_owned(),
    }
}
