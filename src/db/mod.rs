//! The data layer: one primary pool, 0..N replica pools, and routing by intent.
//!
//! Call sites say what they need:
//! - [`Db::write`]: the primary, for writes and transactions that write;
//! - [`Db::read_fresh`]: the primary, for reads that must see the latest commit;
//! - [`Db::read`]: a healthy replica when one is in rotation, else the primary
//!   (counted in `db_read_fallbacks_total`). If the replica connection breaks
//!   mid-read, the read is retried once on the primary.
//!
//! A background task ([`crate::monitor`]) calls [`Db::check_health`] to measure
//! replica lag and move replicas in and out of the rotation.

pub mod consistency;
pub mod migrate;
pub mod partitions;
pub mod pool;
pub mod replica;
pub mod shards;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sqlx::PgPool;

use crate::config::{DatabaseConfig, PoolConfig, Secret};
use crate::error::is_unavailable;
use crate::metrics::Metrics;
use pool::{Access, display_addr, lazy_pool};
pub use replica::{Replica, ReplicaStatus};
pub use shards::{Shard, UserDb};

/// Result of one health check of the primary.
#[derive(Debug, Clone)]
pub struct PrimaryStatus {
    pub reachable: bool,
    pub latency: Duration,
    pub error: Option<String>,
}

/// One database cluster (a primary and its replicas) and, on `main`, the
/// shards that hold per-user rows ([`shards`]). Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
    /// Set on `main` when `SHARD_URLS` names shards; `None` on a shard's own
    /// handle and on a single-database deployment.
    shards: Option<Arc<shards::Shards>>,
}

struct Inner {
    /// `main`, or the shard's name.
    name: String,
    /// Metric label of the primary: `primary` on main, `<shard>/primary` on a shard.
    primary_label: String,
    primary: PgPool,
    /// One-connection pool used only by health checks, so a busy main pool
    /// never makes a healthy node look dead (and checks never queue behind load).
    primary_probe: PgPool,
    primary_addr: String,
    replicas: Vec<Replica>,
    /// Round-robin position over the replicas.
    next: AtomicUsize,
    max_lag: Duration,
    check_timeout: Duration,
    /// How long a read may wait on a replica before it is abandoned and retried
    /// on the primary (see [`replica_read_timeout`]).
    replica_read_timeout: Duration,
    metrics: Metrics,
}

impl Db {
    /// Builds every pool (main's and each shard's) without connecting yet
    /// (see [`pool::lazy_pool`]).
    pub fn new(config: &DatabaseConfig, metrics: Metrics) -> Result<Self, sqlx::Error> {
        let mut main = Self::cluster(
            shards::MAIN,
            &config.primary_url,
            &config.replica_urls,
            config,
            metrics.clone(),
        )?;
        if !config.shards.is_empty() {
            let mut members = vec![Shard {
                name: shards::MAIN.to_owned(),
                db: main.clone(),
            }];
            for shard in &config.shards {
                members.push(Shard {
                    name: shard.name.clone(),
                    db: Self::cluster(
                        &shard.name,
                        &shard.primary_url,
                        &shard.replica_urls,
                        config,
                        metrics.clone(),
                    )?,
                });
            }
            // A replica in rotation lags at most the bound as of the last
            // check: past this, every replica in rotation has a moved
            // bucket's copy.
            let settle = config.replica_max_lag
                + 2 * config.health_check_interval
                + std::time::Duration::from_secs(1);
            main.shards = Some(Arc::new(shards::Shards::new(members, settle, metrics)));
        }
        Ok(main)
    }

    /// One cluster's pools. Metric labels are `primary`, `replica-<i>` on
    /// main and `<shard>/primary`, `<shard>/replica-<i>` on a shard.
    fn cluster(
        name: &str,
        primary_url: &Secret,
        replica_urls: &[Secret],
        config: &DatabaseConfig,
        metrics: Metrics,
    ) -> Result<Self, sqlx::Error> {
        let label_prefix = if name == shards::MAIN {
            String::new()
        } else {
            format!("{name}/")
        };
        let check_timeout = config.health_check_timeout();
        let probe_config = PoolConfig {
            max_connections: 1,
            min_idle: 0,
            acquire_timeout: check_timeout,
            max_lifetime: None,
            idle_timeout: None,
            test_before_acquire: true,
            statement_timeout: check_timeout,
        };
        let primary = lazy_pool(primary_url, &config.primary_pool, Access::ReadWrite, config)?;
        let primary_probe = lazy_pool(primary_url, &probe_config, Access::ReadOnly, config)?;
        let mut replicas = Vec::with_capacity(replica_urls.len());
        for (i, url) in replica_urls.iter().enumerate() {
            let pool = lazy_pool(url, &config.replica_pool, Access::ReadOnly, config)?;
            let probe = lazy_pool(url, &probe_config, Access::ReadOnly, config)?;
            replicas.push(Replica::new(
                format!("{label_prefix}replica-{i}"),
                display_addr(url),
                pool,
                probe,
            ));
        }
        let primary_label = format!("{label_prefix}primary");
        metrics
            .pool_max_connections
            .with_label_values(&[primary_label.as_str()])
            .set(i64::from(config.primary_pool.max_connections));
        for replica in &replicas {
            metrics
                .pool_max_connections
                .with_label_values(&[replica.name.as_str()])
                .set(i64::from(config.replica_pool.max_connections));
            let name = [replica.name.as_str()];
            metrics.replica_in_rotation.with_label_values(&name).set(0);
            metrics
                .replica_lag_seconds
                .with_label_values(&name)
                .set(0.0);
            metrics.replica_lag_bytes.with_label_values(&name).set(0);
        }
        // Export every series from the start (at zero), so dashboards and alert
        // rules find them before the first fallback happens.
        for reason in [
            "no_replica_in_rotation",
            "replica_error",
            "replica_behind_writer",
            "freshness_unknown",
        ] {
            metrics
                .db_read_fallbacks_total
                .with_label_values(&[reason])
                .inc_by(0);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                primary_label,
                primary,
                primary_probe,
                primary_addr: display_addr(primary_url),
                replicas,
                next: AtomicUsize::new(0),
                max_lag: config.replica_max_lag,
                check_timeout,
                replica_read_timeout: replica_read_timeout(&config.replica_pool),
                metrics,
            }),
            shards: None,
        })
    }

    /// `main`, or the shard's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The metric label of this cluster's primary.
    pub fn primary_label(&self) -> &str {
        &self.inner.primary_label
    }

    /// The primary, for writes.
    pub fn write(&self) -> &PgPool {
        &self.inner.primary
    }

    /// The primary, for reads that must observe the latest committed data.
    pub fn read_fresh(&self) -> &PgPool {
        &self.inner.primary
    }

    pub fn primary_addr(&self) -> &str {
        &self.inner.primary_addr
    }

    pub fn replicas(&self) -> &[Replica] {
        &self.inner.replicas
    }

    /// Runs a read that may be slightly stale on a replica in rotation, or on the
    /// primary when none is. `op` gets a pool handle (cheap to clone) and may be
    /// called twice: once on the replica and, if that connection broke or the
    /// replica did not answer within [`replica_read_timeout`], once on the
    /// primary. Errors that are not about the connection (bad SQL, a write
    /// refused by the read-only session) are returned as they are.
    pub async fn read<T, F, Fut>(&self, op: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let metrics = &self.inner.metrics;
        let Some(replica) = self.pick_replica() else {
            if !self.inner.replicas.is_empty() {
                metrics
                    .db_read_fallbacks_total
                    .with_label_values(&["no_replica_in_rotation"])
                    .inc();
            }
            metrics
                .db_reads_total
                .with_label_values(&[self.inner.primary_label.as_str()])
                .inc();
            return op(self.inner.primary.clone()).await;
        };
        metrics
            .db_reads_total
            .with_label_values(&[replica.name.as_str()])
            .inc();
        // A replica behind a network partition (or a hung host) does not fail: it
        // goes silent, and a query already sent on one of its connections would
        // wait for TCP to give up (minutes), far beyond the request timeout. The
        // server-side statement_timeout cannot help, its answer is lost too. So
        // the attempt is bounded here and a silent replica counts as broken.
        let timeout = self.inner.replica_read_timeout;
        let attempt = tokio::time::timeout(timeout, op(replica.pool.clone()))
            .await
            .unwrap_or_else(|_| Err(replica_silent(timeout)));
        match attempt {
            Err(e) if is_unavailable(&e) => {
                replica.mark_broken(&e);
                metrics
                    .replica_in_rotation
                    .with_label_values(&[replica.name.as_str()])
                    .set(0);
                metrics
                    .db_read_fallbacks_total
                    .with_label_values(&["replica_error"])
                    .inc();
                metrics
                    .db_reads_total
                    .with_label_values(&[self.inner.primary_label.as_str()])
                    .inc();
                op(self.inner.primary.clone()).await
            }
            other => other,
        }
    }

    /// The next replica in rotation, round-robin; None when none is healthy.
    fn pick_replica(&self) -> Option<&Replica> {
        let replicas = &self.inner.replicas;
        if replicas.is_empty() {
            return None;
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        (0..replicas.len())
            .map(|offset| &replicas[(start + offset) % replicas.len()])
            .find(|r| r.in_rotation())
    }

    /// Checks the primary and measures every replica against it, updating the
    /// rotation and the lag metrics.
    pub async fn check_health(&self) -> PrimaryStatus {
        let inner = &self.inner;
        let started = Instant::now();
        let sample = tokio::time::timeout(
            inner.check_timeout,
            sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&inner.primary_probe),
        )
        .await;
        let (primary, lsn) = match sample {
            Ok(Ok(lsn)) => (
                PrimaryStatus {
                    reachable: true,
                    latency: started.elapsed(),
                    error: None,
                },
                Some(lsn),
            ),
            Ok(Err(e)) => (down(started, e.to_string()), None),
            Err(_) => (
                down(
                    started,
                    format!("timed out after {:?}", inner.check_timeout),
                ),
                None,
            ),
        };
        inner
            .metrics
            .dependency_up
            .with_label_values(&[inner.primary_label.as_str()])
            .set(i64::from(primary.reachable));

        let checks = inner
            .replicas
            .iter()
            .map(|r| r.check(lsn.as_deref(), started, inner.check_timeout));
        let statuses = join_all(checks).await;
        for (replica, status) in inner.replicas.iter().zip(statuses) {
            let name = replica.name.as_str();
            let m = &inner.metrics;
            m.replica_lag_seconds.with_label_values(&[name]).set(
                if status.lag_seconds.is_finite() {
                    status.lag_seconds
                } else {
                    -1.0
                },
            );
            m.replica_lag_bytes
                .with_label_values(&[name])
                .set(status.lag_bytes);
            let in_rotation = replica.record(status, inner.max_lag);
            m.replica_in_rotation
                .with_label_values(&[name])
                .set(i64::from(in_rotation));
        }
        primary
    }

    /// Copies pool occupancy into the metrics (called when `/metrics` is scraped).
    pub fn update_pool_metrics(&self) {
        let m = &self.inner.metrics;
        let pools = std::iter::once((self.inner.primary_label.as_str(), &self.inner.primary))
            .chain(
                self.inner
                    .replicas
                    .iter()
                    .map(|r| (r.name.as_str(), &r.pool)),
            );
        for (name, pool) in pools {
            let size = i64::from(pool.size());
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            m.pool_connections
                .with_label_values(&[name, "idle"])
                .set(idle);
            m.pool_connections
                .with_label_values(&[name, "in_use"])
                .set((size - idle).max(0));
        }
        if let Some(shards) = &self.shards {
            for shard in shards.members().iter().skip(1) {
                shard.db.update_pool_metrics();
            }
        }
    }

    /// Closes every pool (and every shard's), waiting for checked-out
    /// connections to come back.
    pub async fn close(&self) {
        let inner = &self.inner;
        let mut closing = vec![inner.primary.close(), inner.primary_probe.close()];
        for r in &inner.replicas {
            closing.push(r.pool.close());
            closing.push(r.probe.close());
        }
        join_all(closing).await;
        if let Some(shards) = &self.shards {
            for shard in shards.members().iter().skip(1) {
                Box::pin(shard.db.close()).await;
            }
        }
    }
}

/// The longest a read may take on a replica: getting a connection (the pool's
/// acquire timeout), then running (its statement timeout, after which a healthy
/// replica cancels the statement itself and says so), plus a margin for that
/// answer to arrive. Past it, the replica is not answering at all.
fn replica_read_timeout(pool: &PoolConfig) -> Duration {
    pool.acquire_timeout + pool.statement_timeout + Duration::from_millis(500)
}

/// The error for a replica read abandoned after `timeout`: an I/O timeout, so
/// it is classed as "unavailable" like any other broken connection.
fn replica_silent(timeout: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the replica did not answer within {timeout:?}"),
    ))
}

fn down(started: Instant, error: String) -> PrimaryStatus {
    PrimaryStatus {
        reachable: false,
        latency: started.elapsed(),
        error: Some(error),
    }
}
