//! The application: shared state, the router and the middleware stack.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Auth;
use crate::cache::Cache;
use crate::cache::redis::Redis;
use crate::config::{Config, CorsOrigins};
use crate::db::Db;
use crate::db::consistency::WriteTokens;
use crate::http;
use crate::leaderboard::Leaderboard;
use crate::metrics::Metrics;
use crate::monitor::{self, Health};
use crate::openapi;
use crate::ratelimit::RateLimiter;

/// Responses below this many bytes are sent uncompressed: gzip would cost more
/// CPU than it saves on the wire.
pub const COMPRESSION_MIN_BYTES: u64 = 1000;

/// Everything a handler can reach. axum clones the state for every extraction,
/// so it is one `Arc` around the handles rather than a dozen of them.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppStateInner>,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.inner
    }
}

pub struct AppStateInner {
    pub config: Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    pub cache: Cache,
    /// Per-user "last write" positions for read-your-writes on replicas.
    pub write_tokens: WriteTokens,
    pub leaderboard: Leaderboard,
    pub auth: Auth,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// Video answers' object storage (src/media.rs).
    pub media: crate::media::MediaStore,
    /// Live updates: publishing and local fan-out (src/live.rs).
    pub live: crate::live::Live,
}

/// A running application: its state plus the background tasks it owns.
pub struct App {
    pub state: AppState,
    stop: watch::Sender<bool>,
    monitor: JoinHandle<()>,
    subscriber: JoinHandle<()>,
    live_reader: JoinHandle<()>,
    live_watch: JoinHandle<()>,
    maintenance: JoinHandle<()>,
}

impl App {
    /// Builds pools and clients, optionally migrates, runs a first health check
    /// (so replicas are in rotation before the first request) and starts the
    /// background monitor.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let db =
            Db::new(&config.database, metrics.clone()).context("configuring database pools")?;
        let redis = Redis::new(
            &config.redis,
            metrics.redis_errors_total.clone(),
            metrics.redis_circuit_open.clone(),
        )
        .context("configuring Redis")?;
        let limiter = RateLimiter::new(
            redis.clone(),
            &config.redis.key_prefix,
            metrics.rate_limit_decisions_total.clone(),
        );
        let auth = Auth::new(&config.auth, limiter).context("configuring authentication")?;
        let cache = Cache::new(
            &config.cache,
            redis.clone(),
            &config.redis.key_prefix,
            metrics.clone(),
        );
        // A replica in rotation lags at most the lag bound (as of the last
        // check): past this, every replica in rotation has a user's write.
        let token_ttl = config.database.replica_max_lag
            + 2 * config.database.health_check_interval
            + Duration::from_secs(1);
        let write_tokens = WriteTokens::new(redis.clone(), &config.redis.key_prefix, token_ttl);
        let leaderboard = Leaderboard::new(redis.clone(), &config.redis.key_prefix);
        let live = crate::live::Live::new(
            redis.clone(),
            &config.redis.key_prefix,
            config.live.replay_events,
            config.live.max_connections,
            metrics.live.clone(),
        );
        let media =
            crate::media::MediaStore::open(&config.media).context("opening media storage")?;
        let pubsub_client =
            ::redis::Client::open(config.redis.url.expose()).context("configuring Redis")?;
        if config.database.migrate_on_start {
            crate::db::migrate::run_all(&db)
                .await
                .context("running migrations at start-up")?;
        }
        // Where each bucket's users live (stage 4), before the first request.
        if let Err(e) = db.reload_shard_map().await {
            tracing::warn!(error = %e, "could not load the shard map; every bucket is on main until it loads");
        }
        let health = Arc::new(Health::default());
        let state = AppState {
            inner: Arc::new(AppStateInner {
                config: Arc::new(config),
                db,
                redis,
                cache,
                write_tokens,
                leaderboard,
                auth,
                metrics,
                health,
                media,
                live,
            }),
        };
        let (config, db, metrics) = (&state.config, &state.db, &state.metrics);
        // Partitions for now and the next periods, before the first request —
        // bounded, so an unreachable primary does not hold up start-up (the
        // periodic task retries).
        let first_round = crate::maintenance::run_once(&state);
        if tokio::time::timeout(Duration::from_secs(5), first_round)
            .await
            .is_err()
        {
            tracing::warn!("start-up maintenance timed out; the periodic task will retry");
        }
        let interval = config.database.health_check_interval;
        let check_timeout = config.database.health_check_timeout();
        monitor::check_once(db, &state.redis, &state.health, metrics, check_timeout).await;
        let (stop, stop_rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor::run(
            db.clone(),
            state.redis.clone(),
            state.health.clone(),
            metrics.clone(),
            interval,
            check_timeout,
            stop_rx.clone(),
        ));
        let subscriber = tokio::spawn(state.cache.clone().run_subscriber(
            pubsub_client,
            config.redis.response_timeout,
            state.auth.accounts.clone(),
            db.shards().cloned(),
            stop_rx.clone(),
        ));
        // Events published from now on reach this instance's subscribers
        // (bounded: without Redis the reader starts at its first connection).
        let live = &state.live;
        let live_start = tokio::time::timeout(Duration::from_secs(1), live.newest_id())
            .await
            .ok()
            .and_then(Result::ok);
        let live_reader = tokio::spawn(live.clone().run_reader(
            ::redis::Client::open(config.redis.url.expose()).context("configuring Redis")?,
            live_start,
            stop_rx.clone(),
        ));
        let live_watch = tokio::spawn(live.clone().run_watch(stop_rx.clone()));
        let maintenance = tokio::spawn(crate::maintenance::run(
            state.clone(),
            config.database.maintenance_interval,
            stop_rx,
        ));
        Ok(Self {
            state,
            stop,
            monitor,
            subscriber,
            live_reader,
            live_watch,
            maintenance,
        })
    }

    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// What the server serves: the router behind the fast path for public
    /// cached pages (src/http/fast_path.rs).
    pub fn service(&self) -> http::fast_path::FastPath {
        let state = &self.state;
        http::fast_path::FastPath::new(
            self.router(),
            state.config.http.fast_path,
            state.cache.clone(),
            state.metrics.clone(),
            &state.config.http.cors_origins,
        )
    }

    /// Stops background tasks and closes the pools.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.monitor.await;
        let _ = self.subscriber.await;
        let _ = self.live_reader.await;
        let _ = self.live_watch.await;
        let _ = self.maintenance.await;
        self.state.db.close().await;
    }
}

/// The routes and their OpenAPI document, before middleware.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(http::operations::router())
        .nest("/api/v1", http::api_v1())
}

/// The complete router: routes, OpenAPI JSON, docs page and middleware.
pub fn router(state: AppState) -> Router {
    let (routes, mut openapi) = api_router().split_for_parts();
    openapi::close_tagged_unions(&mut openapi);
    let routes = routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        // Processed video media (not an API resource: not in the OpenAPI document).
        .route(
            "/media/{*key}",
            axum::routing::get(http::videos::serve_media),
        )
        .fallback(http::not_found)
        .with_state(state.clone());
    with_middleware(routes, &state)
}

/// Wraps a router in the production middleware stack (outermost first):
/// observe (request id, problem+json for framework errors, log line, metrics)
/// → panic catcher → CORS → gzip (≥ 1000 bytes) → limits (an unsatisfiable
/// `Accept-Encoding`, body size, then timeout). Two `from_fn` layers, not one
/// per concern: each costs a boxed future and a clone of the inner service
/// per request (docs/benchmarks.md).
pub fn with_middleware(router: Router, state: &AppState) -> Router {
    let http_config = &state.config.http;
    let compression = compression_codings().compress_when(
        SizeAbove::new(COMPRESSION_MIN_BYTES)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE),
    );
    let stack = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            http::observe::observe,
        ))
        .layer(CatchPanicLayer::custom(http::problems::panic_to_problem))
        .option_layer(cors_layer(&http_config.cors_origins))
        .layer(compression)
        .layer(axum::middleware::from_fn_with_state(
            RequestLimits {
                body: http_config.body_limit_bytes,
                chunk_body: state.config.media.chunk_bytes as usize,
                timeout: http_config.request_timeout,
            },
            limit_request,
        ));
    router.layer(stack)
}

/// The codings the compression layer may produce (identity aside): one
/// definition for the layer and for [`refuses_every_coding`].
fn compression_codings() -> CompressionLayer {
    CompressionLayer::new().gzip(true)
}

/// Whether the request's `Accept-Encoding` refuses identity and every coding
/// the compression layer produces (`identity;q=0`, `*;q=0`, `br,
/// identity;q=0`...). The layer answers those 406 itself, but only after the
/// handler has run: a write would be committed and reported as refused. So
/// the layer is asked first, with an empty response, and only when weights
/// are present (nothing can be refused without them).
async fn refuses_every_coding(headers: &axum::http::HeaderMap) -> bool {
    use tower::{Layer, ServiceExt};
    if !crate::cache::layered::has_weighted_codings(headers) {
        return false;
    }
    let mut probe = axum::http::Request::new(axum::body::Body::empty());
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        probe
            .headers_mut()
            .append(header::ACCEPT_ENCODING, value.clone());
    }
    let empty = tower::service_fn(|_: axum::http::Request<axum::body::Body>| async {
        Ok::<_, std::convert::Infallible>(axum::http::Response::new(axum::body::Body::empty()))
    });
    compression_codings()
        .layer(empty)
        .oneshot(probe)
        .await
        .is_ok_and(|response| response.status() == axum::http::StatusCode::NOT_ACCEPTABLE)
}

/// Per-request bounds: `HTTP_BODY_LIMIT_BYTES` and `HTTP_REQUEST_TIMEOUT`
/// everywhere but on video chunk uploads, which take up to `VIDEO_CHUNK_BYTES`
/// and [`http::problems::CHUNK_UPLOAD_TIMEOUT`].
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    body: usize,
    chunk_body: usize,
    timeout: Duration,
}

/// Refuses a request whose `Accept-Encoding` no response could satisfy and a
/// declared oversized body at once, caps the bytes read from one without a
/// length (the extractors turn the overflow into a 413), and bounds how long
/// the request may run.
async fn limit_request(
    axum::extract::State(limits): axum::extract::State<RequestLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let chunk =
        request.method() == Method::PUT && http::videos::is_chunk_path(request.uri().path());
    let (limit, timeout) = if chunk {
        (
            limits.chunk_body,
            limits.timeout.max(http::problems::CHUNK_UPLOAD_TIMEOUT),
        )
    } else {
        (limits.body, limits.timeout)
    };
    if refuses_every_coding(request.headers()).await {
        return crate::error::problem_response(
            axum::http::StatusCode::NOT_ACCEPTABLE,
            "not-acceptable",
            "Accept-Encoding refuses every coding this server can send: accept identity or gzip."
                .into(),
            Vec::new(),
        );
    }
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return axum::response::IntoResponse::into_response(
            crate::error::AppError::PayloadTooLarge(format!(
                "The request body is larger than {limit} bytes."
            )),
        );
    }
    let request =
        request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)));
    http::problems::with_timeout(timeout, request, next).await
}

/// None when no origin is allowed: then no CORS headers are sent at all and
/// browsers block cross-origin calls.
pub(crate) fn cors_layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow_origin = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => {
            AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
    };
    let layer = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(3600));
    Some(layer)
}
