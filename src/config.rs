//! All settings come from the environment (12-factor) and are validated once at
//! start-up. Every problem is collected and reported together, so a bad deploy
//! fails with one message that lists each variable to fix.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

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
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
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
    /// Peers whose `X-Forwarded-For` is believed (the load balancers).
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub env: AppEnv,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub log: LogConfig,
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
        };

        let redis = RedisConfig {
            url: Secret::new(
                env.optional("REDIS_URL")
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
            ),
            connect_timeout: env.duration("REDIS_CONNECT_TIMEOUT", Duration::from_millis(500)),
            response_timeout: env.duration("REDIS_RESPONSE_TIMEOUT", Duration::from_millis(250)),
        };

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

/// Parses `250ms`, `5s`, `2m`, `1h`; a bare number means seconds.
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
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {raw:?} (use ms, s, m or h)"
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
    fn durations_accept_units_and_reject_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn database_urls_never_appear_in_debug_output() {
        let cfg = config(&[("DATABASE_URL", "postgres://user:hunter2@db/app")]).expect("valid");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn wildcard_cors_is_refused_in_production() {
        let err = config(&[
            ("DATABASE_URL", "postgres://p/app"),
            ("APP_ENV", "production"),
            ("CORS_ALLOWED_ORIGINS", "*"),
        ])
        .expect_err("invalid");
        assert!(err.to_string().contains("CORS_ALLOWED_ORIGINS"));
    }
}
