//! Prometheus metrics. One registry per [`Metrics`] (not the global default), so
//! several app instances in one test process never share counters.

use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Cheap to clone (one `Arc`): middleware and extractors clone it per request,
/// and cloning a dozen separate metric handles showed up as 15 % of a
/// `/health` request's CPU in a profile.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

impl std::ops::Deref for Metrics {
    type Target = MetricsInner;
    fn deref(&self) -> &MetricsInner {
        &self.inner
    }
}

pub struct MetricsInner {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub active_connections: IntGauge,
    pub requests_in_flight: IntGauge,
    pub pool_connections: IntGaugeVec,
    pub pool_max_connections: IntGaugeVec,
    pub db_reads_total: IntCounterVec,
    pub db_read_fallbacks_total: IntCounterVec,
    pub replica_lag_seconds: GaugeVec,
    pub replica_lag_bytes: IntGaugeVec,
    pub replica_in_rotation: IntGaugeVec,
    pub dependency_up: IntGaugeVec,
    pub redis_errors_total: IntCounter,
    /// Requests answered by the fast path (src/http/fast_path.rs).
    pub fast_path_replays_total: IntCounter,
    /// Log lines dropped because stdout could not keep up (src/telemetry.rs),
    /// brought up to date at each scrape.
    log_lines_dropped_total: IntCounter,
    pub rate_limit_decisions_total: IntCounterVec,
    pub auth_events_total: IntCounterVec,
    pub cache_requests_total: IntCounterVec,
    pub cache_invalidations_total: IntCounterVec,
    pub redis_circuit_open: IntGauge,
    pub partition_default_rows: IntGaugeVec,
    pub shard_buckets: IntGaugeVec,
    pub shard_write_refusals_total: IntCounterVec,
    /// The job queue's depth and age (sampled at scrape time) and outcomes.
    pub jobs: crate::jobs::JobMetrics,
    /// Live connections and fan-out (src/live.rs).
    pub live: crate::live::LiveMetrics,
}

impl Metrics {
    /// Counts one answered request and observes its duration, labelled by
    /// the route template (never the raw path: bounded cardinality).
    pub fn record_request(
        &self,
        method: &str,
        route: &str,
        status: axum::http::StatusCode,
        elapsed: std::time::Duration,
    ) {
        self.requests_total
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let requests_total = IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "HTTP requests by method, route template and status",
            ),
            &["method", "endpoint", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "api_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["endpoint"],
        )
        .expect("valid metric");
        let active_connections =
            IntGauge::new("api_active_connections", "Open client TCP connections")
                .expect("valid metric");
        let requests_in_flight =
            IntGauge::new("api_requests_in_flight", "Requests being handled right now")
                .expect("valid metric");
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Database pool connections by pool and state (idle, in_use)",
            ),
            &["pool", "state"],
        )
        .expect("valid metric");
        let pool_max_connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_max_connections",
                "Configured maximum size of each database pool",
            ),
            &["pool"],
        )
        .expect("valid metric");
        let db_reads_total = IntCounterVec::new(
            Opts::new(
                "db_reads_total",
                "Read operations by the node that served them",
            ),
            &["pool"],
        )
        .expect("valid metric");
        let db_read_fallbacks_total = IntCounterVec::new(
            Opts::new(
                "db_read_fallbacks_total",
                "Reads that wanted a replica but went to the primary, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let replica_lag_seconds = GaugeVec::new(
            Opts::new(
                "db_replica_lag_seconds",
                "Measured replay lag of each replica",
            ),
            &["replica"],
        )
        .expect("valid metric");
        let replica_lag_bytes = IntGaugeVec::new(
            Opts::new(
                "db_replica_lag_bytes",
                "WAL bytes the replica has not replayed yet",
            ),
            &["replica"],
        )
        .expect("valid metric");
        let replica_in_rotation = IntGaugeVec::new(
            Opts::new(
                "db_replica_in_rotation",
                "1 when the replica serves reads, 0 when taken out",
            ),
            &["replica"],
        )
        .expect("valid metric");
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "dependency_up",
                "1 when the last health check of a dependency succeeded",
            ),
            &["dependency"],
        )
        .expect("valid metric");

        let redis_errors_total = IntCounter::new(
            "redis_errors_total",
            "Redis commands that failed (timeouts, connection errors)",
        )
        .expect("valid metric");
        let fast_path_replays_total = IntCounter::new(
            "api_fast_path_replays_total",
            "Requests answered by the fast path: a public cached page replayed from L1 without routing",
        )
        .expect("valid metric");
        let log_lines_dropped_total = IntCounter::new(
            "log_lines_dropped_total",
            "Log lines dropped because the log writer's queue was full (stdout too slow)",
        )
        .expect("valid metric");
        let rate_limit_decisions_total = IntCounterVec::new(
            Opts::new(
                "rate_limit_decisions_total",
                "Rate-limit checks by limiter, result (allowed, limited) and backend (redis, local fallback)",
            ),
            &["limiter", "result", "backend"],
        )
        .expect("valid metric");
        let auth_events_total = IntCounterVec::new(
            Opts::new(
                "auth_events_total",
                "Authentication events (login_ok, login_failed, refresh_reuse_detected...)",
            ),
            &["event"],
        )
        .expect("valid metric");

        let cache_requests_total = IntCounterVec::new(
            Opts::new(
                "cache_requests_total",
                "Cache lookups by layer (l1 in-process, l2 Redis), namespace and result (hit, miss, error)",
            ),
            &["layer", "namespace", "result"],
        )
        .expect("valid metric");
        let cache_invalidations_total = IntCounterVec::new(
            Opts::new(
                "cache_invalidations_total",
                "Namespace invalidations by origin (local write, remote instance via pub/sub, resync after a lost subscription)",
            ),
            &["namespace", "origin"],
        )
        .expect("valid metric");
        let redis_circuit_open = IntGauge::new(
            "redis_circuit_open",
            "1 while the Redis circuit breaker is open (callers use their fallbacks without calling Redis)",
        )
        .expect("valid metric");

        let partition_default_rows = IntGaugeVec::new(
            Opts::new(
                "db_partition_default_rows",
                "Rows in a partitioned table's DEFAULT partition (should be 0: a partition is missing)",
            ),
            &["table"],
        )
        .expect("valid metric");

        let shard_buckets = IntGaugeVec::new(
            Opts::new(
                "db_shard_buckets",
                "Buckets of per-user data each shard holds, as this instance's shard map says",
            ),
            &["shard"],
        )
        .expect("valid metric");
        let shard_write_refusals_total = IntCounterVec::new(
            Opts::new(
                "db_shard_write_refusals_total",
                "Per-user writes refused with a 503 because their bucket was moving (moved) or maps to an unknown shard (unknown)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["moved", "unknown_shard"] {
            shard_write_refusals_total
                .with_label_values(&[reason])
                .inc_by(0);
        }

        for collector in [
            Box::new(requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(active_connections.clone()),
            Box::new(requests_in_flight.clone()),
            Box::new(pool_connections.clone()),
            Box::new(pool_max_connections.clone()),
            Box::new(db_reads_total.clone()),
            Box::new(db_read_fallbacks_total.clone()),
            Box::new(replica_lag_seconds.clone()),
            Box::new(replica_lag_bytes.clone()),
            Box::new(replica_in_rotation.clone()),
            Box::new(dependency_up.clone()),
            Box::new(redis_errors_total.clone()),
            Box::new(fast_path_replays_total.clone()),
            Box::new(log_lines_dropped_total.clone()),
            Box::new(rate_limit_decisions_total.clone()),
            Box::new(auth_events_total.clone()),
            Box::new(cache_requests_total.clone()),
            Box::new(cache_invalidations_total.clone()),
            Box::new(redis_circuit_open.clone()),
            Box::new(partition_default_rows.clone()),
            Box::new(shard_buckets.clone()),
            Box::new(shard_write_refusals_total.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let jobs = crate::jobs::JobMetrics::new();
        jobs.register(&registry).expect("metric names are unique");
        let live = crate::live::LiveMetrics::new();
        live.register(&registry).expect("metric names are unique");

        Self {
            inner: Arc::new(MetricsInner {
                registry,
                requests_total,
                request_duration,
                active_connections,
                requests_in_flight,
                pool_connections,
                pool_max_connections,
                db_reads_total,
                db_read_fallbacks_total,
                replica_lag_seconds,
                replica_lag_bytes,
                replica_in_rotation,
                dependency_up,
                redis_errors_total,
                fast_path_replays_total,
                log_lines_dropped_total,
                rate_limit_decisions_total,
                auth_events_total,
                cache_requests_total,
                cache_invalidations_total,
                redis_circuit_open,
                partition_default_rows,
                shard_buckets,
                shard_write_refusals_total,
                jobs,
                live,
            }),
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        crate::telemetry::count_dropped_lines(&self.log_lines_dropped_total);
        let mut buffer = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
