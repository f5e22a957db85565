//! Dependency health: a background task checks the primary, every replica and
//! Redis each `HEALTH_CHECK_INTERVAL` and publishes a snapshot. `/ready` only
//! reads that snapshot, so readiness probes cost nothing and cannot pile load on
//! a struggling database.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::cache::redis::Redis;
use crate::db::{Db, PrimaryStatus, ReplicaStatus};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct ReplicaHealth {
    pub name: String,
    pub addr: String,
    pub in_rotation: bool,
    pub status: ReplicaStatus,
}

#[derive(Debug, Clone)]
pub struct RedisHealth {
    pub reachable: bool,
    pub latency: Duration,
    pub error: Option<String>,
}

/// One shard (stage 4) besides main: its primary, its replicas and how many
/// buckets it holds in this instance's map.
#[derive(Debug, Clone)]
pub struct ShardHealth {
    pub name: String,
    pub addr: String,
    pub primary: PrimaryStatus,
    pub replicas: Vec<ReplicaHealth>,
    pub buckets: usize,
}

/// What the last round of checks saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub checked_at: DateTime<Utc>,
    pub primary: PrimaryStatus,
    pub replicas: Vec<ReplicaHealth>,
    pub redis: RedisHealth,
    /// Empty without sharding.
    pub shards: Vec<ShardHealth>,
}

fn replica_health(db: &Db) -> Vec<ReplicaHealth> {
    db.replicas()
        .iter()
        .map(|r| ReplicaHealth {
            name: r.name.clone(),
            addr: r.addr.clone(),
            in_rotation: r.in_rotation(),
            status: r.status(),
        })
        .collect()
}

/// Checks every shard but main, concurrently.
async fn check_shards(db: &Db) -> Vec<ShardHealth> {
    let Some(shards) = db.shards() else {
        return Vec::new();
    };
    let counts = shards.bucket_counts();
    let checks = shards.members().iter().skip(1).map(|shard| async {
        let primary = shard.db.check_health().await;
        ShardHealth {
            name: shard.name.clone(),
            addr: shard.db.primary_addr().to_owned(),
            primary,
            replicas: replica_health(&shard.db),
            buckets: counts
                .iter()
                .find(|(name, _)| *name == shard.name)
                .map_or(0, |(_, n)| *n),
        }
    });
    futures_util::future::join_all(checks).await
}

/// Shared readiness state: the latest snapshot and whether shutdown has begun.
#[derive(Default)]
pub struct Health {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().ok().and_then(|s| s.clone())
    }

    fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut slot) = self.snapshot.write() {
            *slot = Some(Arc::new(snapshot));
        }
    }

    /// Flips readiness to 503 for the rest of the process's life.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Runs one round of checks and publishes the result.
pub async fn check_once(
    db: &Db,
    redis: &Redis,
    health: &Health,
    metrics: &Metrics,
    timeout: Duration,
) {
    let redis_check = async {
        match tokio::time::timeout(timeout, redis.ping()).await {
            Ok(Ok(latency)) => RedisHealth {
                reachable: true,
                latency,
                error: None,
            },
            Ok(Err(e)) => RedisHealth {
                reachable: false,
                latency: Duration::ZERO,
                error: Some(e.to_string()),
            },
            Err(_) => RedisHealth {
                reachable: false,
                latency: timeout,
                error: Some(format!("timed out after {timeout:?}")),
            },
        }
    };
    let (primary, redis_health, shards) =
        tokio::join!(db.check_health(), redis_check, check_shards(db));
    metrics
        .dependency_up
        .with_label_values(&["redis"])
        .set(i64::from(redis_health.reachable));
    health.publish(Snapshot {
        checked_at: Utc::now(),
        primary,
        replicas: replica_health(db),
        redis: redis_health,
        shards,
    });
}

/// Checks every `interval` (each check bounded by `timeout`) until `stop`
/// changes. With sharding it also reloads the shard map: when asked (a move
/// announced a flip, a write met a `moved` fence) and every
/// [`MAP_REFRESH`](crate::db::shards::MAP_REFRESH).
pub async fn run(
    db: Db,
    redis: Redis,
    health: Arc<Health>,
    metrics: Metrics,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut map_ticker = tokio::time::interval(crate::db::shards::MAP_REFRESH);
    map_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shards = db.shards().cloned();
    loop {
        // A fresh wait each round: Notify keeps a request made meanwhile.
        let reload_requested = async {
            match &shards {
                Some(shards) => shards.reload_requested().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick() => check_once(&db, &redis, &health, &metrics, timeout).await,
            _ = map_ticker.tick(), if shards.is_some() => reload_map(&db).await,
            () = reload_requested => reload_map(&db).await,
            _ = stop.changed() => break,
        }
    }
}

async fn reload_map(db: &Db) {
    if let Err(e) = db.reload_shard_map().await {
        tracing::warn!(error = %e, "could not reload the shard map; keeping the current one");
    }
}
