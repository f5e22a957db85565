//! All settings come from the environment (12-factor) and are validated once at
//! start-up. Every problem is collected and reported together, so a bad deploy
//! fails with one message that lists each variable to fix.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::cache::{Namespace, Ttls};
use crate::spanish::checker::AccentPolicy;

/// Which environment the process runs in. Production turns on the strict checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl FromStr for AppEnv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!(
                "unknown environment {other:?} (expected development, test or production)"
            )),
        }
    }
}

/// A value that must never appear in logs or `Debug` output (database URLs carry passwords).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            other => Err(format!(
                "unknown log format {other:?} (expected json or pretty)"
            )),
        }
    }
}

/// Knobs for one connection pool. The primary and the replicas are configured separately.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub min_idle: u32,
    pub acquire_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub test_before_acquire: bool,
    /// Server-side `statement_timeout` for every session of this pool.
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub primary_url: Secret,
    pub replica_urls: Vec<Secret>,
    pub primary_pool: PoolConfig,
    pub replica_pool: PoolConfig,
    /// A replica whose replay lag exceeds this leaves the read rotation.
    pub replica_max_lag: Duration,
    /// How often replicas (and the primary, and Redis) are health-checked.
    pub health_check_interval: Duration,
    /// Run migrations when `serve` starts (under an advisory lock).
    pub migrate_on_start: bool,
    /// How often to create partitions ahead and purge expired keys/tokens
    /// (`MAINTENANCE_INTERVAL`, default 1h).
    pub maintenance_interval: Duration,
    /// `SHARD_URLS`: the databases that hold per-user rows besides `main`
    /// (stage 4, docs/sharding.md). Empty: one database, as in stages 1-3.
    pub shards: Vec<ShardConfig>,
    /// `DB_BEHIND_PGBOUNCER` (default false): the database URLs point at
    /// PgBouncer in transaction mode (src/db/pool.rs explains what changes).
    pub behind_pgbouncer: bool,
}

/// One shard from `SHARD_URLS`: `name=primary-url[|replica-url...]`, entries
/// separated by commas. Shards use the `DB_POOL_*` and `DB_REPLICA_POOL_*`
/// knobs of the main database.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub name: String,
    pub primary_url: Secret,
    pub replica_urls: Vec<Secret>,
}

impl FromStr for ShardConfig {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let (name, urls) = entry
            .split_once('=')
            .ok_or("expected name=postgres://primary[|postgres://replica...]")?;
        let name = name.trim();
        if !is_shard_name(name) || name == crate::db::shards::MAIN {
            return Err(format!(
                "shard name {name:?}: 1-32 of a-z, 0-9 and '-', starting with a letter or digit, and not `main`"
            ));
        }
        let mut urls = urls.split('|').map(str::trim);
        let primary = urls.next().unwrap_or_default();
        let mut all = vec![primary];
        all.extend(urls);
        for url in &all {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(format!("shard {name}: every URL must be a postgres:// URL"));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            primary_url: Secret::new(primary.to_owned()),
            replica_urls: all[1..]
                .iter()
                .map(|u| Secret::new((*u).to_owned()))
                .collect(),
        })
    }
}

/// A shard's name as `shard_map` stores it.
pub fn is_shard_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    /// Prepended to every key, so environments (or tests) can share one Redis.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

/// The layered cache (L1 in-process, L2 Redis) for public data.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `CACHE_ENABLED=false` serves every read from the database (for
    /// measuring the uncached path, or debugging); ETags still work.
    pub enabled: bool,
    /// Bound on the L1's memory, in bytes of cached bodies (`CACHE_L1_MAX_BYTES`).
    pub l1_max_bytes: u64,
    /// (L1, L2) TTLs per namespace, from `CACHE_TTL_<NAMESPACE>=<l1>,<l2>`.
    pub ttls: [Ttls; Namespace::ALL.len()],
}

/// CivicQ settings.
#[derive(Debug, Clone)]
pub struct CivicConfig {
    /// `RATE_LIMIT_QUESTIONS_USER`: questions a user may post (default 20/1d).
    pub questions_per_user: crate::ratelimit::Quota,
    /// `RATE_LIMIT_VOTES_USER`: votes a user may cast or change (default 300/1h).
    pub votes_per_user: crate::ratelimit::Quota,
    /// `RATE_LIMIT_SIMILAR_IP`: similar-question searches per client address
    /// (default 120/1m; an IPv6 client counts by its /64).
    pub similar_per_ip: crate::ratelimit::Quota,
    /// `CIVIC_FLAGS_TO_HIDE`: distinct flags that hide a question until a
    /// moderator reviews it (default 3).
    pub flags_to_hide: i32,
    /// `CIVIC_DUPLICATE_SIMILARITY`: trigram similarity (0–1) from which a new
    /// question counts as a near-duplicate (default 0.6).
    pub duplicate_similarity: f64,
}

/// Subjunctive-practice settings.
#[derive(Debug, Clone)]
pub struct PracticeConfig {
    /// `PRACTICE_ACCENT_POLICY`: `warn` (accent slips count as right, with a
    /// warning) or `strict` (they count as wrong).
    pub accent_policy: AccentPolicy,
    /// `RATE_LIMIT_ATTEMPTS_USER`: answers a learner may submit (default 60/1m:
    /// a burst of 60, then one a second; replays of an Idempotency-Key do not
    /// count).
    pub attempts_per_user: crate::ratelimit::Quota,
    /// `RATE_LIMIT_EXPORTS_USER`: data exports a learner may download
    /// (default 10/1h: each reads their whole history).
    pub exports_per_user: crate::ratelimit::Quota,
}

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers at all: same-origin callers and non-browser clients only.
    None,
    /// `*`: any origin (never with credentials).
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind_addr: SocketAddr,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    pub cors_origins: CorsOrigins,
    /// After SIGTERM, `/ready` answers 503 for this long while the listener still
    /// accepts, so load balancers stop sending new work before we stop accepting.
    pub shutdown_readiness_delay: Duration,
    /// Upper bound on how long in-flight requests may take to finish after that.
    pub shutdown_drain_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed (the load balancers): IPs or CIDR networks.
    pub trusted_proxies: Vec<crate::auth::client_ip::TrustedProxy>,
    /// Answer repeated anonymous GETs of public cached pages from L1 before
    /// routing (src/http/fast_path.rs); `false` sends every request through
    /// the router (to measure the difference, or to rule it out).
    pub fast_path: bool,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

/// A JWT signing key: its id (the `kid` header) and secret.
#[derive(Debug, Clone)]
pub struct JwtKeyConfig {
    pub kid: String,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Signs new access tokens.
    pub active_key: JwtKeyConfig,
    /// Older keys still accepted for verification until their tokens expire.
    pub previous_keys: Vec<JwtKeyConfig>,
    /// True when no secret was configured and a random one was made for this
    /// process (development and test only).
    pub ephemeral_secret: bool,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How many password hashes may run at once (each takes ~19 MiB and one core).
    pub password_hash_concurrency: usize,
    /// How long a sign-in waits for a hashing slot before a 503 (load shedding).
    pub password_hash_queue_timeout: Duration,
    pub login_per_account: crate::ratelimit::Quota,
    pub login_per_ip: crate::ratelimit::Quota,
    pub register_per_ip: crate::ratelimit::Quota,
    /// `ACCOUNT_CACHE_TTL`: how long an instance may use a cached role and
    /// active state when it misses a change announcement (default 5s; 0 =
    /// read the account on every request).
    pub account_cache_ttl: Duration,
}

/// Shortest accepted signing secret, in bytes (HS256 wants at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub env: AppEnv,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub practice: PracticeConfig,
    pub civic: CivicConfig,
    pub media: MediaConfig,
    pub worker: WorkerConfig,
    pub live: LiveConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

/// Live updates (src/live.rs).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Open live connections one instance takes; more get a 503.
    pub max_connections: usize,
    /// Events the shared stream keeps for reconnecting clients.
    pub replay_events: usize,
}

/// Video answers: where media lives and what an upload may be (docs/video.md).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// `file:///absolute/dir` or `s3://bucket[/prefix]` (S3 settings from the
    /// standard `AWS_*` variables).
    pub store_url: String,
    /// Put in front of object keys in the URLs the API returns (`/media`: the
    /// API serves them itself).
    pub public_url: String,
    pub max_bytes: u64,
    pub max_duration: Duration,
    pub chunk_bytes: u32,
    /// An upload not completed within this long is deleted.
    pub upload_ttl: Duration,
    /// S3 settings that override what the AWS SDK conventions would find
    /// (read through the same lookup as the rest, so tests can set them).
    pub s3: S3Settings,
}

/// The standard `AWS_*` variables for an `s3://` store.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `AWS_ENDPOINT_URL`: an S3-compatible server (MinIO...).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// `AWS_ALLOW_HTTP=true` for a plain-http endpoint.
    pub allow_http: bool,
}

/// `refbackend worker` (docs/video.md).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    /// A claimed job is the worker's for this long, renewed every third of it.
    pub lease: Duration,
    pub metrics_addr: SocketAddr,
    pub scratch_dir: std::path::PathBuf,
    /// On SIGTERM, how long a running job may go on before it is handed back.
    pub drain_timeout: Duration,
    /// How often an idle worker looks for jobs when no notification came.
    pub poll_interval: Duration,
    pub ffmpeg: String,
    pub ffprobe: String,
}

impl DatabaseConfig {
    /// How long one health check (of a node or of Redis) may take: the check
    /// interval, but never below 200 ms (a loaded box) nor above 2 s (a dead
    /// node must be noticed quickly).
    pub fn health_check_timeout(&self) -> Duration {
        self.health_check_interval
            .clamp(Duration::from_millis(200), Duration::from_secs(2))
    }
}

/// Every setting that failed validation, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads settings through `lookup`, so tests can supply their own environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut env = Reader {
            lookup: &lookup,
            errors: Vec::new(),
        };

        let app_env = env.parse("APP_ENV", AppEnv::Development);
        let http = HttpConfig {
            bind_addr: env.parse("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080))),
            request_timeout: env.duration("HTTP_REQUEST_TIMEOUT", Duration::from_secs(10)),
            body_limit_bytes: env.parse("HTTP_BODY_LIMIT_BYTES", 1024 * 1024),
            cors_origins: env.cors("CORS_ALLOWED_ORIGINS"),
            shutdown_readiness_delay: env
                .duration("SHUTDOWN_READINESS_DELAY", Duration::from_secs(5)),
            shutdown_drain_timeout: env.duration("SHUTDOWN_DRAIN_TIMEOUT", Duration::from_secs(25)),
            trusted_proxies: env.list("TRUSTED_PROXIES"),
            fast_path: env.parse("HTTP_FAST_PATH", true),
        };

        let primary_url = env.required("DATABASE_URL");
        let replica_urls = env
            .list::<String>("DATABASE_REPLICA_URLS")
            .into_iter()
            .map(Secret::new)
            .collect();
        let database = DatabaseConfig {
            primary_url: Secret::new(primary_url.unwrap_or_default()),
            replica_urls,
            primary_pool: env.pool("DB_POOL", 20, 2, Duration::from_secs(3)),
            // Shorter: a read that cannot get a replica connection soon is
            // better retried on the primary than kept waiting.
            replica_pool: env.pool("DB_REPLICA_POOL", 20, 2, Duration::from_secs(1)),
            replica_max_lag: env.duration("DB_REPLICA_MAX_LAG", Duration::from_secs(5)),
            health_check_interval: env
                .duration("HEALTH_CHECK_INTERVAL", Duration::from_millis(1000)),
            migrate_on_start: env.parse("MIGRATE_ON_START", false),
            maintenance_interval: env.duration("MAINTENANCE_INTERVAL", Duration::from_secs(3600)),
            shards: env.list("SHARD_URLS"),
            behind_pgbouncer: env.parse("DB_BEHIND_PGBOUNCER", false),
        };

        let redis = RedisConfig {
            url: Secret::new(
                env.optional("REDIS_URL")
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
            ),
            key_prefix: env
                .optional("REDIS_KEY_PREFIX")
                .unwrap_or_else(|| "rb:".to_owned()),
            connect_timeout: env.duration("REDIS_CONNECT_TIMEOUT", Duration::from_millis(500)),
            response_timeout: env.duration("REDIS_RESPONSE_TIMEOUT", Duration::from_millis(250)),
        };

        let cache = env.cache();
        let civic = CivicConfig {
            questions_per_user: env.parse("RATE_LIMIT_QUESTIONS_USER", quota(20, 86_400)),
            votes_per_user: env.parse("RATE_LIMIT_VOTES_USER", quota(300, 3600)),
            similar_per_ip: env.parse("RATE_LIMIT_SIMILAR_IP", quota(120, 60)),
            flags_to_hide: env.parse("CIVIC_FLAGS_TO_HIDE", 3_i32).max(1),
            duplicate_similarity: env
                .parse("CIVIC_DUPLICATE_SIMILARITY", 0.6_f64)
                .clamp(0.1, 1.0),
        };
        let practice = PracticeConfig {
            accent_policy: match env.optional("PRACTICE_ACCENT_POLICY").as_deref() {
                None | Some("warn") => AccentPolicy::Warn,
                Some("strict") => AccentPolicy::Strict,
                Some(other) => {
                    env.errors.push(format!(
                        "PRACTICE_ACCENT_POLICY: expected `warn` or `strict`, got `{other}`"
                    ));
                    AccentPolicy::Warn
                }
            },
            attempts_per_user: env.parse("RATE_LIMIT_ATTEMPTS_USER", quota(60, 60)),
            exports_per_user: env.parse("RATE_LIMIT_EXPORTS_USER", quota(10, 3600)),
        };
        let media = MediaConfig {
            store_url: env.optional("MEDIA_STORE_URL").unwrap_or_else(|| {
                let dir = std::env::current_dir()
                    .unwrap_or_else(|_| std::env::temp_dir())
                    .join(".data/media");
                format!("file://{}", dir.display())
            }),
            public_url: env
                .optional("MEDIA_PUBLIC_URL")
                .unwrap_or_else(|| "/media".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            max_bytes: env.parse("VIDEO_MAX_BYTES", 500 * 1024 * 1024),
            max_duration: env.duration("VIDEO_MAX_SECONDS", Duration::from_secs(300)),
            chunk_bytes: env.parse("VIDEO_CHUNK_BYTES", 8 * 1024 * 1024),
            upload_ttl: env.duration("VIDEO_UPLOAD_TTL", Duration::from_secs(24 * 3600)),
            s3: S3Settings {
                endpoint: env.optional("AWS_ENDPOINT_URL"),
                region: env.optional("AWS_REGION"),
                access_key_id: env.optional("AWS_ACCESS_KEY_ID"),
                secret_access_key: env.optional("AWS_SECRET_ACCESS_KEY").map(Secret::new),
                allow_http: env.parse("AWS_ALLOW_HTTP", false),
            },
        };
        if !(64 * 1024..=64 * 1024 * 1024).contains(&media.chunk_bytes) {
            env.errors
                .push("VIDEO_CHUNK_BYTES must be between 65536 and 67108864".into());
        }
        if !media.store_url.starts_with("file:///") && !media.store_url.starts_with("s3://") {
            env.errors.push(
                "MEDIA_STORE_URL must be file:///absolute/dir or s3://bucket[/prefix]".into(),
            );
        }
        let worker = WorkerConfig {
            concurrency: env.parse("WORKER_CONCURRENCY", 1_usize).max(1),
            lease: env
                .duration("JOB_LEASE", Duration::from_secs(60))
                .max(Duration::from_secs(1)),
            metrics_addr: env.parse(
                "WORKER_METRICS_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 9100)),
            ),
            scratch_dir: env
                .optional("WORKER_SCRATCH_DIR")
                .map(Into::into)
                .unwrap_or_else(std::env::temp_dir),
            drain_timeout: env.duration("WORKER_DRAIN_TIMEOUT", Duration::from_secs(120)),
            poll_interval: env.duration("WORKER_POLL_INTERVAL", Duration::from_secs(2)),
            ffmpeg: env
                .optional("FFMPEG_PATH")
                .unwrap_or_else(|| "ffmpeg".to_owned()),
            ffprobe: env
                .optional("FFPROBE_PATH")
                .unwrap_or_else(|| "ffprobe".to_owned()),
        };
        let live = LiveConfig {
            max_connections: env.parse("LIVE_MAX_CONNECTIONS", 10_000_usize),
            replay_events: env.parse("LIVE_REPLAY_EVENTS", 10_000_usize).max(1),
        };
        let auth = env.auth(app_env);

        let default_format = if app_env == AppEnv::Development {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        };
        let log = LogConfig {
            format: env.parse("LOG_FORMAT", default_format),
            filter: env
                .optional("RUST_LOG")
                .unwrap_or_else(|| "info,sqlx=warn,tower_http=warn".to_owned()),
        };

        let mut errors = env.errors;
        validate(&http, &database, &mut errors);
        if app_env == AppEnv::Production && http.cors_origins == CorsOrigins::Any {
            errors.push(
                "CORS_ALLOWED_ORIGINS: `*` is not allowed in production; list the origins".into(),
            );
        }
        if errors.is_empty() {
            Ok(Config {
                env: app_env,
                http,
                database,
                redis,
                cache,
                practice,
                civic,
                media,
                worker,
                live,
                auth,
                log,
            })
        } else {
            Err(ConfigError(errors))
        }
    }
}

fn validate(http: &HttpConfig, db: &DatabaseConfig, errors: &mut Vec<String>) {
    for (prefix, pool) in [
        ("DB_POOL", &db.primary_pool),
        ("DB_REPLICA_POOL", &db.replica_pool),
    ] {
        if pool.max_connections == 0 {
            errors.push(format!("{prefix}_MAX_CONNECTIONS must be at least 1"));
        }
        if pool.min_idle > pool.max_connections {
            errors.push(format!(
                "{prefix}_MIN_IDLE ({}) must not exceed {prefix}_MAX_CONNECTIONS ({})",
                pool.min_idle, pool.max_connections
            ));
        }
        if pool.acquire_timeout.is_zero() {
            errors.push(format!(
                "{prefix}_ACQUIRE_TIMEOUT must be greater than zero"
            ));
        }
    }
    let is_postgres =
        |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
    let url = db.primary_url.expose();
    // An empty URL was already reported as missing.
    if !url.is_empty() && !is_postgres(url) {
        errors.push("DATABASE_URL must be a postgres:// URL".into());
    }
    for (i, replica) in db.replica_urls.iter().enumerate() {
        if !is_postgres(replica.expose()) {
            errors.push(format!(
                "DATABASE_REPLICA_URLS entry {i} must be a postgres:// URL"
            ));
        }
    }
    if db.behind_pgbouncer && db.migrate_on_start {
        errors.push(
            "MIGRATE_ON_START needs a direct database connection (migrations hold a session advisory lock), not DB_BEHIND_PGBOUNCER: run `refbackend migrate` against the databases themselves".into(),
        );
    }
    let mut names = std::collections::HashSet::new();
    for shard in &db.shards {
        if !names.insert(shard.name.as_str()) {
            errors.push(format!(
                "SHARD_URLS: the shard name {} appears twice",
                shard.name
            ));
        }
    }
    if db.health_check_interval < Duration::from_millis(50) {
        errors.push("HEALTH_CHECK_INTERVAL must be at least 50ms".into());
    }
    if http.body_limit_bytes == 0 {
        errors.push("HTTP_BODY_LIMIT_BYTES must be greater than zero".into());
    }
    if http.request_timeout.is_zero() {
        errors.push("HTTP_REQUEST_TIMEOUT must be greater than zero".into());
    }
}

fn quota(limit: u32, secs: u64) -> crate::ratelimit::Quota {
    crate::ratelimit::Quota {
        limit,
        period: Duration::from_secs(secs),
    }
}

/// Why a signing secret is unacceptable, if it is: too short, or one of the
/// placeholders people paste from examples.
fn weak_secret(secret: &str) -> Option<&'static str> {
    const PLACEHOLDERS: &[&str] = &[
        "secret",
        "changeme",
        "change-me",
        "password",
        "development",
        "jwt",
    ];
    let lower = secret.to_ascii_lowercase();
    if secret.len() < MIN_SECRET_BYTES {
        return Some("is shorter than 32 bytes");
    }
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return Some("looks like a placeholder");
    }
    let distinct: std::collections::HashSet<char> = secret.chars().collect();
    if distinct.len() < 8 {
        return Some("has too little variety to be random");
    }
    None
}

/// 48 random bytes, base64url: the per-process secret when none is configured
/// outside production.
fn random_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 48];
    // The OS RNG failing is not recoverable; no secret is better than a guessable one.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `30d`; a bare number means seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (examples: 250ms, 5s, 2m, 1h)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {raw:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !seconds.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&seconds) {
        return Err(format!("{raw:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Reads variables and records every error instead of stopping at the first.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn optional(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&mut self, key: &str) -> Option<String> {
        let value = self.optional(key);
        if value.is_none() {
            self.errors.push(format!("{key} is required"));
        }
        value
    }

    fn parse<T: FromStr>(&mut self, key: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.optional(key) {
            None => default,
            Some(raw) => raw.parse().unwrap_or_else(|e| {
                self.errors.push(format!("{key}={raw:?}: {e}"));
                default
            }),
        }
    }

    fn duration(&mut self, key: &str, default: Duration) -> Duration {
        match self.optional(key) {
            None => default,
            Some(raw) => parse_duration(&raw).unwrap_or_else(|e| {
                self.errors.push(format!("{key}: {e}"));
                default
            }),
        }
    }

    /// An optional duration where `0` or `none` switches the feature off.
    fn optional_duration(&mut self, key: &str, default: Option<Duration>) -> Option<Duration> {
        match self.optional(key).as_deref() {
            None => default,
            Some("none") | Some("0") => None,
            Some(raw) => match parse_duration(raw) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.errors.push(format!("{key}: {e}"));
                    default
                }
            },
        }
    }

    fn list<T: FromStr>(&mut self, key: &str) -> Vec<T>
    where
        T::Err: fmt::Display,
    {
        let Some(raw) = self.optional(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.parse() {
                Ok(v) => out.push(v),
                Err(e) => self.errors.push(format!("{key}: {item:?}: {e}")),
            }
        }
        out
    }

    fn cors(&mut self, key: &str) -> CorsOrigins {
        let origins: Vec<String> = self.list(key);
        if origins.is_empty() {
            return CorsOrigins::None;
        }
        if origins.iter().any(|o| o == "*") {
            return CorsOrigins::Any;
        }
        for origin in &origins {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/');
            if !ok {
                self.errors.push(format!(
                    "{key}: {origin:?} must be an origin like https://app.example.com (scheme, host, optional port, no path)"
                ));
            }
        }
        CorsOrigins::List(origins)
    }

    fn cache(&mut self) -> CacheConfig {
        let ttls = Namespace::ALL.map(|namespace| {
            let default = namespace.default_ttls();
            let key = format!("CACHE_TTL_{}", namespace.key().to_ascii_uppercase());
            let Some(raw) = self.optional(&key) else {
                return default;
            };
            let parsed = raw.split_once(',').and_then(|(l1, l2)| {
                Some(Ttls {
                    l1: parse_duration(l1).ok()?,
                    l2: parse_duration(l2).ok()?,
                })
            });
            match parsed {
                Some(ttls) if !ttls.l1.is_zero() && (ttls.l2.is_zero() || ttls.l1 <= ttls.l2) => {
                    ttls
                }
                _ => {
                    self.errors.push(format!(
                        "{key}: expected `<l1 ttl>,<l2 ttl>` with 0 < l1 <= l2 (l2 = 0: L1 only), e.g. `5s,1m`; got `{raw}`"
                    ));
                    default
                }
            }
        });
        CacheConfig {
            enabled: self.parse("CACHE_ENABLED", true),
            l1_max_bytes: self.parse("CACHE_L1_MAX_BYTES", 64 * 1024 * 1024),
            ttls,
        }
    }

    fn auth(&mut self, app_env: AppEnv) -> AuthConfig {
        let kid = self.optional("JWT_KID").unwrap_or_else(|| "k1".to_owned());
        let (secret, ephemeral_secret) = match self.optional("JWT_SECRET") {
            Some(secret) => {
                if let Some(problem) = weak_secret(&secret) {
                    if app_env == AppEnv::Production {
                        self.errors.push(format!(
                            "JWT_SECRET {problem}; refusing to start in production"
                        ));
                    } else {
                        self.errors.push(format!("JWT_SECRET {problem}"));
                    }
                }
                (Secret::new(secret), false)
            }
            None if app_env == AppEnv::Production => {
                self.errors.push("JWT_SECRET is required in production (32+ random bytes, e.g. `openssl rand -base64 48`)".into());
                (Secret::new(String::new()), false)
            }
            None => (Secret::new(random_secret()), true),
        };
        let mut previous_keys = Vec::new();
        if let Some(raw) = self.optional("JWT_PREVIOUS_KEYS") {
            for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                match entry.split_once(':') {
                    Some((kid, secret)) if !kid.is_empty() => {
                        if let Some(problem) = weak_secret(secret) {
                            self.errors
                                .push(format!("JWT_PREVIOUS_KEYS: key {kid:?}: secret {problem}"));
                        }
                        previous_keys.push(JwtKeyConfig {
                            kid: kid.to_owned(),
                            secret: Secret::new(secret),
                        });
                    }
                    _ => self
                        .errors
                        .push("JWT_PREVIOUS_KEYS entries must be kid:secret".into()),
                }
            }
        }
        if previous_keys.iter().any(|k| k.kid == kid) {
            self.errors.push(format!(
                "JWT_PREVIOUS_KEYS reuses the active JWT_KID {kid:?}"
            ));
        }
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        AuthConfig {
            active_key: JwtKeyConfig { kid, secret },
            previous_keys,
            ephemeral_secret,
            issuer: self
                .optional("JWT_ISSUER")
                .unwrap_or_else(|| "refbackend".to_owned()),
            audience: self
                .optional("JWT_AUDIENCE")
                .unwrap_or_else(|| "refbackend-api".to_owned()),
            access_token_ttl: self.duration("ACCESS_TOKEN_TTL", Duration::from_secs(15 * 60)),
            refresh_token_ttl: self
                .duration("REFRESH_TOKEN_TTL", Duration::from_secs(30 * 24 * 3600)),
            password_hash_concurrency: self.parse("PASSWORD_HASH_CONCURRENCY", cores).max(1),
            password_hash_queue_timeout: self
                .duration("PASSWORD_HASH_QUEUE_TIMEOUT", Duration::from_secs(2)),
            login_per_account: self.parse("RATE_LIMIT_LOGIN_ACCOUNT", quota(10, 15 * 60)),
            login_per_ip: self.parse("RATE_LIMIT_LOGIN_IP", quota(100, 15 * 60)),
            register_per_ip: self.parse("RATE_LIMIT_REGISTER_IP", quota(20, 3600)),
            account_cache_ttl: self.duration("ACCOUNT_CACHE_TTL", Duration::from_secs(5)),
        }
    }

    fn pool(&mut self, prefix: &str, max: u32, min_idle: u32, acquire: Duration) -> PoolConfig {
        PoolConfig {
            max_connections: self.parse(&format!("{prefix}_MAX_CONNECTIONS"), max),
            min_idle: self.parse(&format!("{prefix}_MIN_IDLE"), min_idle),
            acquire_timeout: self.duration(&format!("{prefix}_ACQUIRE_TIMEOUT"), acquire),
            max_lifetime: self.optional_duration(
                &format!("{prefix}_MAX_LIFETIME"),
                Some(Duration::from_secs(30 * 60)),
            ),
            idle_timeout: self.optional_duration(
                &format!("{prefix}_IDLE_TIMEOUT"),
                Some(Duration::from_secs(10 * 60)),
            ),
            test_before_acquire: self.parse(&format!("{prefix}_TEST_BEFORE_ACQUIRE"), true),
            statement_timeout: self.duration(
                &format!("{prefix}_STATEMENT_TIMEOUT"),
                Duration::from_secs(5),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn minimal_environment_gives_documented_defaults() {
        let cfg = config(&[("DATABASE_URL", "postgres://localhost/app")]).expect("valid");
        assert_eq!(cfg.env, AppEnv::Development);
        assert_eq!(cfg.http.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.database.primary_pool.max_connections, 20);
        assert!(cfg.database.replica_urls.is_empty());
        assert_eq!(cfg.http.cors_origins, CorsOrigins::None);
    }

    #[test]
    fn every_invalid_setting_is_reported_at_once() {
        let err = config(&[
            ("DB_POOL_MAX_CONNECTIONS", "zero"),
            ("HTTP_REQUEST_TIMEOUT", "5 fortnights"),
            ("APP_ENV", "staging"),
        ])
        .expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL is required"), "{text}");
        assert!(text.contains("DB_POOL_MAX_CONNECTIONS"), "{text}");
        assert!(text.contains("HTTP_REQUEST_TIMEOUT"), "{text}");
        assert!(text.contains("APP_ENV"), "{text}");
    }

    #[test]
    fn pools_are_configured_separately_for_primary_and_replicas() {
        let cfg = config(&[
            ("DATABASE_URL", "postgres://p/app"),
            (
                "DATABASE_REPLICA_URLS",
                "postgres://r1/app, postgres://r2/app",
            ),
            ("DB_POOL_MAX_CONNECTIONS", "7"),
            ("DB_REPLICA_POOL_MAX_CONNECTIONS", "30"),
            ("DB_REPLICA_POOL_ACQUIRE_TIMEOUT", "250ms"),
            ("DB_REPLICA_POOL_MAX_LIFETIME", "none"),
            ("DB_REPLICA_POOL_TEST_BEFORE_ACQUIRE", "false"),
        ])
        .expect("valid");
        assert_eq!(cfg.database.replica_urls.len(), 2);
        assert_eq!(cfg.database.primary_pool.max_connections, 7);
        assert_eq!(cfg.database.replica_pool.max_connections, 30);
        assert_eq!(
            cfg.database.replica_pool.acquire_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(cfg.database.replica_pool.max_lifetime, None);
        assert!(!cfg.database.replica_pool.test_before_acquire);
        assert!(cfg.database.primary_pool.test_before_acquire);
    }

    #[test]
    fn min_idle_above_max_connections_is_rejected() {
        let err = config(&[
            ("DATABASE_URL", "postgres://p/app"),
            ("DB_POOL_MAX_CONNECTIONS", "2"),
            ("DB_POOL_MIN_IDLE", "5"),
        ])
        .expect_err("invalid");
        assert!(err.to_string().contains("DB_POOL_MIN_IDLE"));
    }

    #[test]
    fn cache_ttls_are_read_per_namespace_and_bad_ones_are_reported() {
        let cfg = config(&[
            ("DATABASE_URL", "postgres://localhost/app"),
            ("CACHE_TTL_QUESTIONS", "1s,10s"),
        ])
        .expect("valid");
        let questions = cfg.cache.ttls[Namespace::Questions.index()];
        assert_eq!(questions.l1, Duration::from_secs(1));
        assert_eq!(questions.l2, Duration::from_secs(10));
        assert_eq!(
            cfg.cache.ttls[Namespace::Verbs.index()],
            Namespace::Verbs.default_ttls()
        );

        let err = config(&[
            ("DATABASE_URL", "postgres://localhost/app"),
            ("CACHE_TTL_CITIES", "10m,1s"),
        ])
        .expect_err("l1 longer than l2");
        assert!(
            err.0.iter().any(|e| e.starts_with("CACHE_TTL_CITIES")),
            "{err:?}"
        );
    }

    #[test]
    fn durations_accept_units_and_reject_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn shard_urls_name_each_shard_with_its_primary_and_replicas() {
        let cfg = config(&[
            ("DATABASE_URL", "postgres://main/app"),
            (
                "SHARD_URLS",
                "shard-1=postgres://s1/app|postgres://s1r/app, shard-2=postgresql://s2/app",
            ),
        ])
        .expect("valid");
        let shards = &cfg.database.shards;
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].name, "shard-1");
        assert_eq!(shards[0].primary_url.expose(), "postgres://s1/app");
        assert_eq!(shards[0].replica_urls.len(), 1);
        assert_eq!(shards[1].name, "shard-2");
        assert!(shards[1].replica_urls.is_empty());
        assert!(
            config(&[("DATABASE_URL", "postgres://main/app")])
                .expect("valid")
                .database
                .shards
                .is_empty()
        );
    }

    #[test]
    fn bad_shard_urls_are_all_reported() {
        for (value, expected) in [
            ("main=postgres://m/app", "not `main`"),
            ("Shard=postgres://s/app", "shard name"),
            ("shard-1", "expected name="),
            ("shard-1=mysql://s/app", "postgres:// URL"),
            ("shard-1=postgres://s/app|http://r", "postgres:// URL"),
            ("a=postgres://x/app,a=postgres://y/app", "appears twice"),
        ] {
            let err = config(&[
                ("DATABASE_URL", "postgres://main/app"),
                ("SHARD_URLS", value),
            ])
            .expect_err(value)
            .to_string();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn migrating_at_start_through_pgbouncer_is_refused() {
        let err = config(&[
            ("DATABASE_URL", "postgres://bouncer/app"),
            ("DB_BEHIND_PGBOUNCER", "true"),
            ("MIGRATE_ON_START", "true"),
        ])
        .expect_err("refused")
        .to_string();
        assert!(err.contains("MIGRATE_ON_START"), "{err}");
    }

    #[test]
    fn database_urls_never_appear_in_debug_output() {
        let cfg = config(&[("DATABASE_URL", "postgres://user:hunter2@db/app")]).expect("valid");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn production_refuses_to_start_without_a_strong_signing_secret() {
        for secret in [
            None,
            Some("short"),
            Some("changeme-changeme-changeme-changeme-1234"),
            Some(&*"a".repeat(64)),
        ] {
            let mut vars = vec![
                ("DATABASE_URL", "postgres://p/app"),
                ("APP_ENV", "production"),
            ];
            if let Some(s) = secret {
                vars.push(("JWT_SECRET", s));
            }
            let err = config(&vars).expect_err("weak secret must be refused");
            assert!(err.to_string().contains("JWT_SECRET"), "{secret:?}: {err}");
        }
        let strong = "Zk3q9L0vX2mB7tR4yW8nC1pD6sF5gH0jK2lM9qA3";
        let cfg = config(&[
            ("DATABASE_URL", "postgres://p/app"),
            ("APP_ENV", "production"),
            ("JWT_SECRET", strong),
        ])
        .expect("strong secret accepted");
        assert!(!cfg.auth.ephemeral_secret);
    }

    #[test]
    fn development_without_a_secret_gets_a_random_one() {
        let a = config(&[("DATABASE_URL", "postgres://p/app")]).expect("valid");
        let b = config(&[("DATABASE_URL", "postgres://p/app")]).expect("valid");
        assert!(a.auth.ephemeral_secret);
        assert!(a.auth.active_key.secret.expose().len() >= MIN_SECRET_BYTES);
        assert_ne!(
            a.auth.active_key.secret.expose(),
            b.auth.active_key.secret.expose()
        );
    }

    #[test]
    fn previous_jwt_keys_are_parsed_for_rotation() {
        let cfg = config(&[
            ("DATABASE_URL", "postgres://p/app"),
            ("JWT_KID", "2026-11"),
            ("JWT_SECRET", "Zk3q9L0vX2mB7tR4yW8nC1pD6sF5gH0jK2lM9qA3"),
            (
                "JWT_PREVIOUS_KEYS",
                "2026-10:Yq2w8E1rT6yU3iO0pA9sD4fG7hJ5kL1zX8cV2bN6",
            ),
        ])
        .expect("valid");
        assert_eq!(cfg.auth.active_key.kid, "2026-11");
        assert_eq!(cfg.auth.previous_keys.len(), 1);
        assert_eq!(cfg.auth.previous_keys[0].kid, "2026-10");
    }

    #[test]
    fn wildcard_cors_is_refused_in_production() {
        let err = config(&[
            ("DATABASE_URL", "postgres://p/app"),
            ("APP_ENV", "production"),
            ("JWT_SECRET", "Zk3q9L0vX2mB7tR4yW8nC1pD6sF5gH0jK2lM9qA3"),
            ("CORS_ALLOWED_ORIGINS", "*"),
        ])
        .expect_err("invalid");
        assert!(err.to_string().contains("CORS_ALLOWED_ORIGINS"));
    }
}
