//! A durable job queue in Postgres (`jobs`, migrations/0022_video_answers.sql).
//!
//! Why a table and not a crate or a broker: the jobs are few and heavy (a
//! transcode takes seconds to minutes), they must be enqueued in the same
//! transaction as the row they work on (an upload is "uploaded" exactly when
//! its job exists), and Postgres is already the one durable thing every stage
//! has. The design:
//!
//! - **Claim** with `FOR UPDATE SKIP LOCKED`: workers never wait on each
//!   other, and each job goes to one worker at a time.
//! - **Lease** (`lease_until`, a visibility timeout) renewed by the worker
//!   every third of its length; a worker that dies stops renewing, and once
//!   the lease has run out the job is claimed again.
//! - **Fencing**: a claim draws a new `lease_token`; renewing, finishing and
//!   failing all require it, so a worker that lost its lease (paused, cut off)
//!   cannot finish a job someone else has taken over: it finishes once.
//! - **Retries** with exponential backoff (`run_at`) up to `max_attempts`,
//!   then **dead** (kept for inspection; `jobs_finished_total{outcome="dead"}`).
//!   A permanent error (a file that is not a video) goes dead at once.
//! - **Wake-up**: enqueueing sends `NOTIFY jobs` (delivered on commit); idle
//!   workers also poll, so a lost notification costs one poll interval.
//!
//! Steps must be idempotent (a retry redoes them): see src/video/mod.rs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The channel `enqueue` notifies.
pub const CHANNEL: &str = "jobs";

/// A claimed job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_token: Uuid,
    pub created_at: DateTime<Utc>,
}

impl Job {
    pub fn is_last_attempt(&self) -> bool {
        self.attempts >= self.max_attempts
    }
}

/// Adds a job in the caller's transaction, unless one for the same subject
/// (`payload.video_id`) is already queued or running. Returns its id if added.
pub async fn enqueue(
    conn: &mut PgConnection,
    kind: &str,
    payload: &Value,
    max_attempts: i32,
) -> sqlx::Result<Option<i64>> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO jobs (kind, payload, max_attempts) VALUES ($1, $2, $3)
         ON CONFLICT (kind, (payload ->> 'video_id')) WHERE status IN ('queued', 'running')
         DO NOTHING RETURNING id",
    )
    .bind(kind)
    .bind(payload)
    .bind(max_attempts)
    .fetch_optional(&mut *conn)
    .await?;
    if id.is_some() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(kind)
            .execute(&mut *conn)
            .await?;
    }
    Ok(id)
}

const CLAIM_SET: &str = "UPDATE jobs j SET status = 'running', attempts = j.attempts + 1,
        lease_token = gen_random_uuid(), lease_until = now() + make_interval(secs => $2),
        locked_by = $1, updated_at = now()
   FROM next WHERE j.id = next.id
   RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts, j.lease_token, j.created_at";

/// Claims the next job: first one whose worker's lease ran out (it has
/// waited longest), else the oldest due one.
pub async fn claim(db: &PgPool, worker: &str, lease: Duration) -> sqlx::Result<Option<Job>> {
    let expired = sqlx::AssertSqlSafe(format!(
        "WITH next AS (SELECT id FROM jobs
            WHERE status = 'running' AND lease_until < now() AND attempts < max_attempts
            ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED)
         {CLAIM_SET}"
    ));
    if let Some(job) = sqlx::query_as::<_, Job>(expired)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .fetch_optional(db)
        .await?
    {
        return Ok(Some(job));
    }
    let due = sqlx::AssertSqlSafe(format!(
        "WITH next AS (SELECT id FROM jobs
            WHERE status = 'queued' AND run_at <= now()
            ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
         {CLAIM_SET}"
    ));
    sqlx::query_as::<_, Job>(due)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .fetch_optional(db)
        .await
}

/// Extends the lease; false when it is no longer this worker's.
pub async fn renew(db: &PgPool, job: &Job, lease: Duration) -> sqlx::Result<bool> {
    let rows = sqlx::query(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $3), updated_at = now()
          WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.id)
    .bind(job.lease_token)
    .bind(lease.as_secs_f64())
    .execute(db)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// Marks the job done in the caller's transaction (with the job's own
/// effects); false when the lease was lost, and then the caller must roll
/// back.
pub async fn finish(conn: &mut PgConnection, job: &Job) -> sqlx::Result<bool> {
    let rows = sqlx::query(
        "UPDATE jobs SET status = 'done', lease_token = NULL, lease_until = NULL,
                finished_at = now(), updated_at = now(), last_error = NULL
          WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.id)
    .bind(job.lease_token)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Queued again, to run after the backoff.
    Retry(Duration),
    /// No attempts left, or a permanent error.
    Dead,
    /// The lease was no longer ours: someone else owns the job now.
    LeaseLost,
}

impl Failed {
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Retry(_) => "retry",
            Self::Dead => "dead",
            Self::LeaseLost => "lease_lost",
        }
    }
}

/// Records a failed attempt in the caller's transaction: a retry after the
/// backoff, or dead when `permanent` or out of attempts.
pub async fn fail(
    conn: &mut PgConnection,
    job: &Job,
    error: &str,
    permanent: bool,
) -> sqlx::Result<Failed> {
    let dead = permanent || job.is_last_attempt();
    let delay = backoff(job.attempts);
    let error: String = error.chars().take(2000).collect();
    let rows = sqlx::query(
        "UPDATE jobs SET status = CASE WHEN $3 THEN 'dead' ELSE 'queued' END,
                run_at = now() + make_interval(secs => $4),
                finished_at = CASE WHEN $3 THEN now() END,
                lease_token = NULL, lease_until = NULL, last_error = $5, updated_at = now()
          WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.id)
    .bind(job.lease_token)
    .bind(dead)
    .bind(delay.as_secs_f64())
    .bind(&error)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(match (rows, dead) {
        (0, _) => Failed::LeaseLost,
        (_, true) => Failed::Dead,
        (_, false) => Failed::Retry(delay),
    })
}

/// Hands a job back untouched (a worker shutting down before it could
/// finish): due now, and the attempt does not count.
pub async fn release(conn: &mut PgConnection, job: &Job) -> sqlx::Result<bool> {
    let rows = sqlx::query(
        "UPDATE jobs SET status = 'queued', run_at = now(), attempts = GREATEST(attempts - 1, 0),
                lease_token = NULL, lease_until = NULL, updated_at = now()
          WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.id)
    .bind(job.lease_token)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if rows == 1 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&job.kind)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows == 1)
}

/// Buries, in the caller's transaction, jobs whose last attempt's worker
/// died (the lease ran out and no attempts are left), returning them so the
/// caller can mark their subjects failed in the same transaction.
pub async fn reap(conn: &mut PgConnection) -> sqlx::Result<Vec<(i64, String, Value)>> {
    sqlx::query_as(
        "UPDATE jobs SET status = 'dead', finished_at = now(), updated_at = now(),
                lease_token = NULL, lease_until = NULL,
                last_error = 'the worker stopped during the last attempt (lease expired)'
          WHERE id IN (SELECT id FROM jobs
                        WHERE status = 'running' AND lease_until < now()
                          AND attempts >= max_attempts
                        FOR UPDATE SKIP LOCKED)
          RETURNING id, kind, payload",
    )
    .fetch_all(&mut *conn)
    .await
}

/// Deletes finished jobs older than `keep`.
pub async fn prune(db: &PgPool, keep: Duration) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM jobs WHERE status IN ('done', 'dead')
            AND finished_at < now() - make_interval(secs => $1)",
    )
    .bind(keep.as_secs_f64())
    .execute(db)
    .await?
    .rows_affected())
}

/// 10 s, 20 s, 40 s… capped at 10 minutes: a transient failure (storage,
/// database) usually clears in seconds; a longer outage should not make the
/// workers hammer it.
pub fn backoff(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    Duration::from_secs(10u64.saturating_mul(1 << exponent).min(600))
}

/// Depth and age per kind, for the metrics and autoscaling.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueStats {
    pub kind: String,
    /// Queued jobs that are due now.
    pub depth: i64,
    /// Seconds since the oldest due job became due (0 when none).
    pub oldest_age_seconds: f64,
    pub running: i64,
}

pub async fn stats(db: &PgPool) -> sqlx::Result<Vec<QueueStats>> {
    sqlx::query_as(
        "SELECT kind,
                count(*) FILTER (WHERE status = 'queued' AND run_at <= now()) AS depth,
                COALESCE(EXTRACT(EPOCH FROM now() - min(run_at)
                    FILTER (WHERE status = 'queued' AND run_at <= now()))::float8, 0) AS oldest_age_seconds,
                count(*) FILTER (WHERE status = 'running') AS running
           FROM jobs WHERE status IN ('queued', 'running')
          GROUP BY kind",
    )
    .fetch_all(db)
    .await
}

/// The queue's metrics, registered by the API (`/metrics`) and by each
/// worker (its own `/metrics`).
#[derive(Clone)]
pub struct JobMetrics {
    pub queue_depth: IntGaugeVec,
    pub oldest_age_seconds: prometheus::GaugeVec,
    pub running: IntGaugeVec,
    pub finished_total: IntCounterVec,
    pub duration_seconds: HistogramVec,
}

/// Every kind there is (so the gauges read 0 rather than vanish).
pub const KINDS: [&str; 1] = [crate::video::TRANSCODE_JOB];

impl JobMetrics {
    pub fn new() -> Self {
        let queue_depth = IntGaugeVec::new(
            Opts::new("jobs_queue_depth", "Queued jobs that are due now, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let oldest_age_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "jobs_oldest_age_seconds",
                "How long the oldest due queued job has been waiting, by kind (0 when none)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let running = IntGaugeVec::new(
            Opts::new("jobs_running", "Jobs held by a worker, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let finished_total = IntCounterVec::new(
            Opts::new(
                "jobs_finished_total",
                "Job attempts ended by this process, by kind and outcome (done, retry, dead, lease_lost, released)",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "job_duration_seconds",
                "Time a job attempt took, by kind and outcome",
            )
            .buckets(vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        for kind in KINDS {
            for outcome in ["done", "retry", "dead", "lease_lost", "released"] {
                finished_total.with_label_values(&[kind, outcome]).inc_by(0);
            }
            queue_depth.with_label_values(&[kind]).set(0);
            oldest_age_seconds.with_label_values(&[kind]).set(0.0);
            running.with_label_values(&[kind]).set(0);
        }
        Self {
            queue_depth,
            oldest_age_seconds,
            running,
            finished_total,
            duration_seconds,
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.queue_depth.clone()))?;
        registry.register(Box::new(self.oldest_age_seconds.clone()))?;
        registry.register(Box::new(self.running.clone()))?;
        registry.register(Box::new(self.finished_total.clone()))?;
        registry.register(Box::new(self.duration_seconds.clone()))?;
        Ok(())
    }

    /// Reads the queue's state into the gauges (kinds with no row read 0).
    pub async fn sample(&self, db: &PgPool) -> sqlx::Result<()> {
        let rows = stats(db).await?;
        for kind in KINDS {
            let row = rows.iter().find(|r| r.kind == kind);
            self.queue_depth
                .with_label_values(&[kind])
                .set(row.map_or(0, |r| r.depth));
            self.oldest_age_seconds
                .with_label_values(&[kind])
                .set(row.map_or(0.0, |r| r.oldest_age_seconds));
            self.running
                .with_label_values(&[kind])
                .set(row.map_or(0, |r| r.running));
        }
        Ok(())
    }
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(7), Duration::from_secs(600));
        assert_eq!(backoff(i32::MAX), Duration::from_secs(600));
        assert_eq!(backoff(0), Duration::from_secs(10));
    }
}
