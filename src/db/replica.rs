//! One read replica: its pool, its measured health and whether it is in the read
//! rotation. The health check compares the replica's replay position with the
//! primary's current WAL position sampled just before, so a replica that
//! receives WAL but does not replay it (paused, or too slow) is seen as lagging.
//!
//! How far behind it is, in seconds, is bounded from above two ways, and the
//! tighter bound is reported (see [`staleness`]): the age of the newest commit it
//! has replayed, and the time since a check last saw it fully caught up.
//!
//! While the primary is unreachable nothing new can be written, so a replica is
//! caught up once it has replayed all it can (see [`replayed_all_it_can`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// When the primary position was sampled at the last check that found the
    /// replica fully caught up with it: its data is at least that fresh.
    caught_up_at: Mutex<Option<Instant>>,
    /// The replay position seen by the last check, to tell whether replay has
    /// stopped.
    last_replay_lsn: Mutex<Option<String>>,
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
            caught_up_at: Mutex::new(None),
            last_replay_lsn: Mutex::new(None),
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
    /// sampled at `sampled_at` (None when the primary is unreachable: then the lag
    /// is judged from what the replica has received but not replayed).
    pub async fn check(
        &self,
        primary_lsn: Option<&str>,
        sampled_at: Instant,
        timeout: Duration,
    ) -> ReplicaStatus {
        type Row = (
            bool,
            Option<bool>,
            Option<f64>,
            Option<i64>,
            bool,
            Option<String>,
        );
        let query = sqlx::query_as::<_, Row>(
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
                CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
                pg_last_wal_replay_lsn()::text
            "#,
        )
        .bind(primary_lsn);
        match tokio::time::timeout(timeout, query.fetch_one(&self.probe)).await {
            Ok(Ok((
                in_recovery,
                caught_up,
                since_replay,
                lag_bytes,
                replay_paused,
                replay_lsn,
            ))) => {
                let replay_idle = {
                    let mut last = self
                        .last_replay_lsn
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let idle = replay_lsn.is_some() && *last == replay_lsn;
                    *last = replay_lsn;
                    idle
                };
                let caught_up = match primary_lsn {
                    Some(_) => caught_up.unwrap_or(false),
                    None => {
                        replayed_all_it_can(caught_up.unwrap_or(false), replay_idle, replay_paused)
                    }
                };
                let since_caught_up = {
                    let mut last = self.caught_up_at.lock().unwrap_or_else(|e| e.into_inner());
                    if caught_up {
                        *last = Some(sampled_at);
                    }
                    last.map(|at| at.elapsed())
                };
                let lag_seconds = staleness(caught_up, since_replay, since_caught_up);
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

/// Whether a replica has replayed all it can while the primary is unreachable
/// (so nothing new can be written): everything it received, or — its replay
/// idle since the last check and not paused — every complete record it
/// received. A primary that crashes can leave the start of a WAL record on
/// the replica that will never be completed, so "received > replayed" stays
/// true for the whole outage; counting that as lag would take the replica out
/// of the rotation after the lag bound and fail every read until the primary
/// is back. (A replay stalled by a recovery conflict also looks idle: reads
/// may then be as stale as `max_standby_streaming_delay`, which beats failing.)
pub fn replayed_all_it_can(received_all_replayed: bool, replay_idle: bool, paused: bool) -> bool {
    received_all_replayed || (replay_idle && !paused)
}

/// How stale a replica's data may be, in seconds: 0 when it has replayed
/// everything, else the smaller of two upper bounds (infinite when neither is
/// known):
/// - `since_replay`: the age of the newest commit it has replayed (it has all
///   data up to that commit). Alone this misjudges a replica that is replaying
///   a burst of WAL without commits (a `CREATE DATABASE`, a `VACUUM`, a bulk
///   load) after a quiet spell: a replica caught up a moment ago would look
///   minutes behind, leave the rotation, and take every read to the primary,
///   or fail them all while the primary is down.
/// - `since_caught_up`: the time since a check last found it fully caught up
///   with the primary (its data is at least as fresh as the primary was then).
///   Alone this misjudges a replica that is always a few milliseconds behind a
///   busy primary; the commit age is tiny then.
pub fn staleness(
    caught_up: bool,
    since_replay: Option<f64>,
    since_caught_up: Option<Duration>,
) -> f64 {
    if caught_up {
        return 0.0;
    }
    let by_commit = since_replay.map_or(f64::INFINITY, |s| s.max(0.0));
    let by_check = since_caught_up.map_or(f64::INFINITY, |d| d.as_secs_f64());
    by_commit.min(by_check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_up_replica_is_not_stale() {
        assert_eq!(staleness(true, Some(600.0), None), 0.0);
    }

    #[test]
    fn a_replica_replaying_a_burst_after_a_quiet_spell_is_as_stale_as_its_last_catch_up() {
        // Last commit 10 minutes ago, but caught up at the check 100 ms ago.
        let lag = staleness(false, Some(600.0), Some(Duration::from_millis(100)));
        assert!((lag - 0.1).abs() < 1e-9, "{lag}");
    }

    #[test]
    fn a_replica_always_just_behind_a_busy_primary_is_as_stale_as_its_last_commit() {
        let lag = staleness(false, Some(0.02), Some(Duration::from_secs(30)));
        assert!((lag - 0.02).abs() < 1e-9, "{lag}");
    }

    #[test]
    fn without_the_primary_an_idle_replay_has_replayed_all_it_can_unless_paused() {
        // The tail of a record the crash cut off: received, never replayable.
        assert!(replayed_all_it_can(false, true, false));
        // Still replaying what it received: behind.
        assert!(!replayed_all_it_can(false, false, false));
        // Paused on purpose with WAL waiting: behind.
        assert!(!replayed_all_it_can(false, true, true));
        assert!(replayed_all_it_can(true, false, false));
    }

    #[test]
    fn a_replica_behind_that_never_replayed_or_caught_up_is_infinitely_stale() {
        assert!(staleness(false, None, None).is_infinite());
        // A clock skew making the commit look from the future counts as fresh.
        assert_eq!(staleness(false, Some(-1.0), None), 0.0);
    }
}
