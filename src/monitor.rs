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

/// What the last round of checks saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub checked_at: DateTime<Utc>,
    pub primary: PrimaryStatus,
    pub replicas: Vec<ReplicaHealth>,
    pub redis: RedisHealth,
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
    let (primary, redis_health) = tokio::join!(db.check_health(), redis_check);
    metrics
        .dependency_up
        .with_label_values(&["redis"])
        .set(i64::from(redis_health.reachable));
    let replicas = db
        .replicas()
        .iter()
        .map(|r| ReplicaHealth {
            name: r.name.clone(),
            addr: r.addr.clone(),
            in_rotation: r.in_rotation(),
            status: r.status(),
        })
        .collect();
    health.publish(Snapshot {
        checked_at: Utc::now(),
        primary,
        replicas,
        redis: redis_health,
    });
}

/// Checks every `interval` (each check bounded by `timeout`) until `stop` changes.
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
    loop {
        tokio::select! {
            _ = ticker.tick() => check_once(&db, &redis, &health, &metrics, timeout).await,
            _ = stop.changed() => break,
        }
    }
}
