//! One read replica: its pool, its measured health and whether it is in the read
//! rotation. The health check compares the replica's replay position with the
//! primary's current WAL position sampled just before, so a replica that
//! receives WAL but does not replay it (paused, or too slow) is seen as lagging.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;

/// What the last health check saw.
#[derive(Debug, Clone, Default)]
pub struct ReplicaStatus {
    pub reachable: bool,
    pub in_recovery: bool,
    pub lag_seconds: f64,
    pub lag_bytes: i64,
    pub replay_paused: bool,
    pub error: Option<String>,
}

pub struct Replica {
    pub name: String,
    pub addr: String,
    pub pool: PgPool,
    /// One-connection pool for health checks only.
    pub probe: PgPool,
    in_rotation: AtomicBool,
    status: Mutex<ReplicaStatus>,
}

impl Replica {
    pub fn new(name: String, addr: String, pool: PgPool, probe: PgPool) -> Self {
        Self {
            name,
            addr,
            pool,
            probe,
            // Out until the first health check proves it is a replica that keeps up.
            in_rotation: AtomicBool::new(false),
            status: Mutex::new(ReplicaStatus::default()),
        }
    }

    pub fn in_rotation(&self) -> bool {
        self.in_rotation.load(Ordering::Acquire)
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Takes the replica out at once after a broken connection was seen on the
    /// read path; the next health check puts it back if it has recovered.
    pub fn mark_broken(&self, error: &sqlx::Error) {
        if self.in_rotation.swap(false, Ordering::AcqRel) {
            tracing::warn!(replica = %self.name, error = %error, "replica connection failed; out of rotation");
        }
        if let Ok(mut status) = self.status.lock() {
            status.reachable = false;
            status.error = Some(error.to_string());
        }
    }

    /// Records a health check and decides the rotation. Returns the new rotation state.
    pub fn record(&self, status: ReplicaStatus, max_lag: Duration) -> bool {
        let healthy =
            status.reachable && status.in_recovery && status.lag_seconds <= max_lag.as_secs_f64();
        let was = self.in_rotation.swap(healthy, Ordering::AcqRel);
        match (was, healthy) {
            (false, true) => {
                tracing::info!(replica = %self.name, lag_seconds = status.lag_seconds, "replica in rotation")
            }
            (true, false) => tracing::warn!(
                replica = %self.name,
                reachable = status.reachable,
                in_recovery = status.in_recovery,
                lag_seconds = status.lag_seconds,
                error = status.error.as_deref().unwrap_or(""),
                "replica out of rotation"
            ),
            _ => {}
        }
        if let Ok(mut slot) = self.status.lock() {
            *slot = status;
        }
        healthy
    }

    /// Measures the replica against `primary_lsn`, the primary's WAL position
    /// sampled just before (None when the primary is unreachable: then the lag is
    /// judged from what the replica has received but not replayed).
    pub async fn check(&self, primary_lsn: Option<&str>, timeout: Duration) -> ReplicaStatus {
        let query = sqlx::query_as::<_, (bool, Option<bool>, Option<f64>, Option<i64>, bool)>(
            r#"
            SELECT
                pg_is_in_recovery(),
                -- Has it replayed everything the primary had written at the sample?
                CASE WHEN $1::text IS NULL
                     THEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()
                     ELSE pg_last_wal_replay_lsn() >= $1::pg_lsn END,
                -- Age of the newest replayed commit: the lag, when it is behind.
                EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8,
                pg_wal_lsn_diff(COALESCE($1::pg_lsn, pg_last_wal_receive_lsn()), pg_last_wal_replay_lsn())::int8,
                CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END
            "#,
        )
        .bind(primary_lsn);
        match tokio::time::timeout(timeout, query.fetch_one(&self.probe)).await {
            Ok(Ok((in_recovery, caught_up, since_replay, lag_bytes, replay_paused))) => {
                let caught_up = caught_up.unwrap_or(false);
                let lag_seconds = if caught_up {
                    0.0
                } else {
                    // Behind, and no commit ever replayed: treat as infinitely stale.
                    since_replay.unwrap_or(f64::INFINITY).max(0.0)
                };
                ReplicaStatus {
                    reachable: true,
                    in_recovery,
                    lag_seconds,
                    lag_bytes: lag_bytes.unwrap_or(0).max(0),
                    replay_paused,
                    error: None,
                }
            }
            Ok(Err(e)) => ReplicaStatus {
                error: Some(e.to_string()),
                ..ReplicaStatus::default()
            },
            Err(_) => ReplicaStatus {
                error: Some(format!("health check timed out after {timeout:?}")),
                ..ReplicaStatus::default()
            },
        }
    }
}
