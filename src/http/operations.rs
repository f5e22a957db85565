//! Operations endpoints: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::monitor::Snapshot;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`: the process is up and its runtime answers.
    pub status: &'static str,
    pub version: &'static str,
}

/// Liveness: answers without touching any dependency, so a database outage
/// never gets healthy processes restarted.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Liveness)))]
pub async fn health() -> Response {
    let mut response = Json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response();
    no_store(&mut response);
    response
}

#[derive(Debug, Serialize, ToSchema, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    /// Every dependency is healthy.
    Ready,
    /// Can serve, with something missing (a replica out, Redis down, or the
    /// primary down while replicas still serve reads).
    Degraded,
    /// Cannot serve, or shutting down.
    Unavailable,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeReport {
    /// `up` or `down`.
    pub status: &'static str,
    pub addr: String,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaReport {
    pub name: String,
    pub addr: String,
    /// `up` or `down`.
    pub status: &'static str,
    /// Whether reads are routed to it now.
    pub in_rotation: bool,
    /// Replay lag in seconds; null when it could not be measured.
    pub lag_seconds: Option<f64>,
    pub lag_bytes: i64,
    pub replay_paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedisReport {
    /// `up` or `down`.
    pub status: &'static str,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A shard besides main (stage 4).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardReport {
    pub name: String,
    /// Buckets of users it holds, as this instance's shard map says.
    pub buckets: usize,
    pub primary: NodeReport,
    pub replicas: Vec<ReplicaReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Dependencies {
    pub primary: NodeReport,
    pub replicas: Vec<ReplicaReport>,
    pub redis: RedisReport,
    /// The other shards holding per-user rows; absent without sharding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardReport>,
}

fn replica_reports(replicas: &[crate::monitor::ReplicaHealth]) -> Vec<ReplicaReport> {
    replicas
        .iter()
        .map(|r| ReplicaReport {
            name: r.name.clone(),
            addr: r.addr.clone(),
            status: up(r.status.reachable),
            in_rotation: r.in_rotation,
            lag_seconds: (r.status.reachable && r.status.lag_seconds.is_finite())
                .then_some((r.status.lag_seconds * 1000.0).round() / 1000.0),
            lag_bytes: r.status.lag_bytes,
            replay_paused: r.status.replay_paused,
            error: r.status.error.clone(),
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    /// Why it is not `ready`, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    pub shutting_down: bool,
    /// When the dependencies were last checked (every `HEALTH_CHECK_INTERVAL`).
    pub checked_at: Option<DateTime<Utc>>,
    pub dependencies: Option<Dependencies>,
}

fn up(ok: bool) -> &'static str {
    if ok { "up" } else { "down" }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Decides readiness from a snapshot. Pure, so the rules are unit-tested.
pub fn assess(
    snapshot: Option<&Snapshot>,
    shutting_down: bool,
    max_age: Duration,
    now: DateTime<Utc>,
) -> (ReadyStatus, Vec<String>) {
    if shutting_down {
        return (ReadyStatus::Unavailable, vec!["shutting down".into()]);
    }
    let Some(s) = snapshot else {
        return (
            ReadyStatus::Unavailable,
            vec!["no health check has completed yet".into()],
        );
    };
    let age = (now - s.checked_at).to_std().unwrap_or_default();
    if age > max_age {
        return (
            ReadyStatus::Unavailable,
            vec![format!("health checks are stale ({age:?} old)")],
        );
    }
    let mut reasons = Vec::new();
    let serving_replicas = s.replicas.iter().filter(|r| r.in_rotation).count();
    if !s.primary.reachable {
        reasons.push("primary unreachable: writes fail".into());
        if serving_replicas == 0 {
            return (ReadyStatus::Unavailable, reasons);
        }
    }
    for r in s.replicas.iter().filter(|r| !r.in_rotation) {
        reasons.push(format!("{} out of rotation", r.name));
    }
    if !s.redis.reachable {
        reasons.push("redis unreachable: caching and shared rate limits degraded".into());
    }
    // A shard down fails its users' practice, not the instance: the others
    // keep working, so the instance stays in the balancer, degraded.
    for shard in &s.shards {
        let serving = shard.replicas.iter().filter(|r| r.in_rotation).count();
        if !shard.primary.reachable {
            reasons.push(if serving == 0 {
                format!(
                    "shard {} unreachable: the practice data of its {} bucket(s) of users is unavailable",
                    shard.name, shard.buckets
                )
            } else {
                format!(
                    "shard {} primary unreachable: its users' practice writes fail",
                    shard.name
                )
            });
        }
        for r in shard.replicas.iter().filter(|r| !r.in_rotation) {
            reasons.push(format!("{} out of rotation", r.name));
        }
    }
    if reasons.is_empty() {
        (ReadyStatus::Ready, reasons)
    } else {
        (ReadyStatus::Degraded, reasons)
    }
}

/// Readiness: 200 `ready` or `degraded` when this instance can serve, 503
/// `unavailable` when it cannot or once graceful shutdown has begun. Reports
/// the primary, every replica with its measured lag, and Redis.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Can serve (`ready` or `degraded`)", body = Readiness),
        (status = 503, description = "Cannot serve, or shutting down", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let snapshot = state.health.snapshot();
    let interval = state.config.database.health_check_interval;
    let max_age = (interval * 3).max(Duration::from_secs(5));
    let shutting_down = state.health.is_shutting_down();
    let (status, reasons) = assess(snapshot.as_deref(), shutting_down, max_age, Utc::now());
    let dependencies = snapshot.as_deref().map(|s| Dependencies {
        primary: NodeReport {
            status: up(s.primary.reachable),
            addr: state.db.primary_addr().to_owned(),
            latency_ms: ms(s.primary.latency),
            error: s.primary.error.clone(),
        },
        replicas: replica_reports(&s.replicas),
        redis: RedisReport {
            status: up(s.redis.reachable),
            latency_ms: ms(s.redis.latency),
            error: s.redis.error.clone(),
        },
        shards: s
            .shards
            .iter()
            .map(|shard| ShardReport {
                name: shard.name.clone(),
                buckets: shard.buckets,
                primary: NodeReport {
                    status: up(shard.primary.reachable),
                    addr: shard.addr.clone(),
                    latency_ms: ms(shard.primary.latency),
                    error: shard.primary.error.clone(),
                },
                replicas: replica_reports(&shard.replicas),
            })
            .collect(),
    });
    let body = Readiness {
        status,
        reasons,
        shutting_down,
        checked_at: snapshot.as_ref().map(|s| s.checked_at),
        dependencies,
    };
    let code = if status == ReadyStatus::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (code, Json(body)).into_response();
    no_store(&mut response);
    response
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.db.update_pool_metrics();
    // The queue's depth and age for dashboards and autoscaling; a slow or
    // unreachable primary leaves the last values rather than stall the scrape.
    let sample = state.metrics.jobs.sample(state.db.write());
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(500), sample).await {
        tracing::debug!(error = %e, "sampling the job queue failed");
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{PrimaryStatus, ReplicaStatus};
    use crate::monitor::{RedisHealth, ReplicaHealth};

    fn snapshot(primary: bool, replica_in_rotation: Option<bool>, redis: bool) -> Snapshot {
        Snapshot {
            checked_at: Utc::now(),
            primary: PrimaryStatus {
                reachable: primary,
                latency: Duration::ZERO,
                error: None,
            },
            replicas: replica_in_rotation
                .into_iter()
                .map(|in_rotation| ReplicaHealth {
                    name: "replica-0".into(),
                    addr: "x".into(),
                    in_rotation,
                    status: ReplicaStatus::default(),
                })
                .collect(),
            redis: RedisHealth {
                reachable: redis,
                latency: Duration::ZERO,
                error: None,
            },
            shards: Vec::new(),
        }
    }

    #[test]
    fn a_shard_down_is_degraded_and_named_not_unavailable() {
        let mut s = snapshot(true, None, true);
        s.shards.push(crate::monitor::ShardHealth {
            name: "shard-2".into(),
            addr: "x".into(),
            primary: PrimaryStatus {
                reachable: false,
                latency: Duration::ZERO,
                error: Some("refused".into()),
            },
            replicas: Vec::new(),
            buckets: 512,
        });
        let (status, reasons) = assess(Some(&s), false, Duration::from_secs(5), Utc::now());
        assert_eq!(status, ReadyStatus::Degraded);
        assert!(reasons.iter().any(|r| r.contains("shard-2")), "{reasons:?}");
    }

    fn assess_now(s: &Snapshot) -> ReadyStatus {
        assess(Some(s), false, Duration::from_secs(5), Utc::now()).0
    }

    #[test]
    fn all_dependencies_up_is_ready() {
        assert_eq!(
            assess_now(&snapshot(true, Some(true), true)),
            ReadyStatus::Ready
        );
        assert_eq!(assess_now(&snapshot(true, None, true)), ReadyStatus::Ready);
    }

    #[test]
    fn a_replica_out_or_redis_down_is_degraded() {
        assert_eq!(
            assess_now(&snapshot(true, Some(false), true)),
            ReadyStatus::Degraded
        );
        assert_eq!(
            assess_now(&snapshot(true, Some(true), false)),
            ReadyStatus::Degraded
        );
    }

    #[test]
    fn primary_down_is_degraded_while_a_replica_serves_reads_and_unavailable_otherwise() {
        assert_eq!(
            assess_now(&snapshot(false, Some(true), true)),
            ReadyStatus::Degraded
        );
        assert_eq!(
            assess_now(&snapshot(false, Some(false), true)),
            ReadyStatus::Unavailable
        );
        assert_eq!(
            assess_now(&snapshot(false, None, true)),
            ReadyStatus::Unavailable
        );
    }

    #[test]
    fn shutting_down_or_stale_checks_are_unavailable() {
        let s = snapshot(true, None, true);
        assert_eq!(
            assess(Some(&s), true, Duration::from_secs(5), Utc::now()).0,
            ReadyStatus::Unavailable
        );
        let later = Utc::now() + chrono::Duration::seconds(60);
        assert_eq!(
            assess(Some(&s), false, Duration::from_secs(5), later).0,
            ReadyStatus::Unavailable
        );
        assert_eq!(
            assess(None, false, Duration::from_secs(5), Utc::now()).0,
            ReadyStatus::Unavailable
        );
    }
}
