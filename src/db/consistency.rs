//! Read-your-writes across replicas, with consistency tokens.
//!
//! After a user's write commits, the primary's WAL position (LSN) is recorded
//! under the user in Redis, for about as long as a replica in rotation may lag
//! ([`WriteTokens`]). A read for that user on any instance then goes to a
//! replica only if the replica has replayed past that position
//! ([`Db::read_consistent`]); otherwise to the primary (counted as
//! `db_read_fallbacks_total{reason="replica_behind_writer"}`). Users who have
//! not written recently read from replicas as usual. If Redis cannot say, the
//! read goes to the primary: never stale, only slower.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use super::Db;
use crate::cache::redis::Redis;
use crate::error::is_unavailable;

/// A Postgres WAL position (`pg_lsn`), e.g. `16/B374D848`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (high, low) = s
            .split_once('/')
            .ok_or_else(|| format!("not an LSN: {s}"))?;
        let high = u64::from_str_radix(high, 16).map_err(|e| e.to_string())?;
        let low = u64::from_str_radix(low, 16).map_err(|e| e.to_string())?;
        if high > u64::from(u32::MAX) || low > u64::from(u32::MAX) {
            return Err(format!("not an LSN: {s}"));
        }
        Ok(Lsn((high << 32) | low))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a read must observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// No recent write by this user: any replica in rotation will do.
    Any,
    /// The user wrote up to this position recently.
    AtLeast(Lsn),
    /// Unknown (Redis unavailable): only the primary is safe.
    Primary,
}

impl Db {
    /// The primary's current WAL position: call it after a write commits.
    ///
    /// The *insert* position, not `pg_current_wal_lsn()` (the write position):
    /// with `synchronous_commit = off` a COMMIT returns before its record is
    /// written out, so the write position can still lie before it, and a
    /// replica stopped there would pass for caught up while missing the write.
    pub async fn current_lsn(&self) -> Result<Lsn, sqlx::Error> {
        let text: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&self.inner.primary)
            .await?;
        text.parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))
    }

    /// Like [`Db::read`], but the data read is at least as fresh as `freshness`
    /// asks: a replica is used only once it has replayed past the user's last
    /// write (checked with one short query), else the primary.
    pub async fn read_consistent<T, F, Fut>(
        &self,
        freshness: Freshness,
        op: F,
    ) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let min = match freshness {
            Freshness::Any => return self.read(op).await,
            Freshness::Primary => return self.read_on_primary("freshness_unknown", op).await,
            Freshness::AtLeast(lsn) => lsn,
        };
        let Some(replica) = self.pick_replica() else {
            return self.read(op).await;
        };
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)",
        )
        .bind(min.to_string())
        .fetch_one(&replica.pool);
        let caught_up = tokio::time::timeout(self.inner.check_timeout, check).await;
        match caught_up {
            Ok(Ok(true)) => {
                let metrics = &self.inner.metrics;
                metrics
                    .db_reads_total
                    .with_label_values(&[replica.name.as_str()])
                    .inc();
                match op(replica.pool.clone()).await {
                    Err(e) if is_unavailable(&e) => {
                        replica.mark_broken(&e);
                        self.read_on_primary("replica_error", op).await
                    }
                    other => other,
                }
            }
            Ok(Ok(false)) => self.read_on_primary("replica_behind_writer", op).await,
            Ok(Err(e)) if is_unavailable(&e) => {
                replica.mark_broken(&e);
                self.read_on_primary("replica_error", op).await
            }
            Ok(Err(e)) => Err(e),
            Err(_) => self.read_on_primary("replica_error", op).await,
        }
    }

    async fn read_on_primary<T, F, Fut>(&self, reason: &str, op: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let metrics = &self.inner.metrics;
        if !self.inner.replicas.is_empty() {
            metrics
                .db_read_fallbacks_total
                .with_label_values(&[reason])
                .inc();
        }
        metrics
            .db_reads_total
            .with_label_values(&[self.inner.primary_label.as_str()])
            .inc();
        op(self.inner.primary.clone()).await
    }
}

/// Per-user "last write" positions in Redis, shared by every instance.
///
/// Redis can fail exactly when a token is written. So every token is also kept
/// in this instance (reads here stay correct), and after a failed write,
/// "no token in Redis" is not trusted for a TTL: those reads go to the primary.
#[derive(Clone)]
pub struct WriteTokens {
    redis: Redis,
    prefix: String,
    ttl: Duration,
    set_max: redis::Script,
    local: Arc<Local>,
}

struct Local {
    epoch: Instant,
    tokens: Mutex<HashMap<String, (Lsn, Instant)>>,
    /// Milliseconds since `epoch` of the last failed token write (0: none).
    last_failure_ms: AtomicU64,
}

/// Bound on the per-instance copy; expired entries are dropped past it.
const LOCAL_TOKENS_MAX: usize = 100_000;

/// Sets each key to ARGV[1] unless it already holds a later position.
const SET_MAX: &str = r"
for _, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if tonumber(ARGV[1]) > current then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
return 1
";

impl WriteTokens {
    /// `ttl`: how long a replica in rotation may be behind (the lag bound plus
    /// a health-check interval or two); after that every replica has the write.
    pub fn new(redis: Redis, prefix: &str, ttl: Duration) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}ryw:"),
            ttl,
            set_max: redis::Script::new(SET_MAX),
            local: Arc::new(Local {
                epoch: Instant::now(),
                tokens: Mutex::new(HashMap::new()),
                last_failure_ms: AtomicU64::new(0),
            }),
        }
    }

    fn remember_locally(&self, scope: &str, lsn: Lsn) {
        let expires = Instant::now() + self.ttl;
        let mut tokens = self
            .local
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() >= LOCAL_TOKENS_MAX {
            let now = Instant::now();
            tokens.retain(|_, (_, until)| *until > now);
        }
        let entry = tokens.entry(scope.to_owned()).or_insert((lsn, expires));
        *entry = (entry.0.max(lsn), expires);
    }

    fn local_token(&self, scope: &str) -> Option<Lsn> {
        let tokens = self
            .local
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens
            .get(scope)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(lsn, _)| *lsn)
    }

    fn note_failure(&self) {
        let ms = u64::try_from(self.local.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.local
            .last_failure_ms
            .store(ms.max(1), Ordering::Relaxed);
    }

    /// Did a token write fail recently enough that Redis may miss a token?
    fn recent_failure(&self) -> bool {
        let last = self.local.last_failure_ms.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let now = u64::try_from(self.local.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(last) < ttl
    }

    /// Remembers that `user` wrote up to `lsn`. Returns false if Redis failed
    /// (the caller may fall back to primary reads for this user's session).
    pub async fn record(&self, user: Uuid, lsn: Lsn) -> bool {
        self.record_scope(&user.to_string(), lsn).await
    }

    /// What `user`'s next read must observe.
    pub async fn freshness(&self, user: Uuid) -> Freshness {
        self.freshness_scope(&user.to_string()).await
    }

    /// Like [`WriteTokens::record`] for a shared scope (e.g. a cache namespace
    /// whose loaders must not cache data older than the write that
    /// invalidated it).
    pub async fn record_scope(&self, scope: &str, lsn: Lsn) -> bool {
        self.record_scopes(&[scope], lsn).await
    }

    /// [`WriteTokens::record_scope`] for several scopes at once, in one
    /// Redis round trip.
    pub async fn record_scopes(&self, scopes: &[&str], lsn: Lsn) -> bool {
        for scope in scopes {
            self.remember_locally(scope, lsn);
        }
        if !self.redis.available() {
            self.note_failure();
            return false;
        }
        let mut conn = self.redis.connection();
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.set_max.prepare_invoke();
        for scope in scopes {
            invocation.key(format!("{}{scope}", self.prefix));
        }
        let result: Result<i64, _> = invocation
            .arg(lsn.0)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(_) => {
                self.redis.report_success();
                true
            }
            Err(e) => {
                self.redis.report_failure(&e);
                self.note_failure();
                false
            }
        }
    }

    /// What a read in `scope` must observe.
    pub async fn freshness_scope(&self, scope: &str) -> Freshness {
        if !self.redis.available() {
            return Freshness::Primary;
        }
        let mut conn = self.redis.connection();
        let result: Result<Option<u64>, _> = redis::cmd("GET")
            .arg(format!("{}{scope}", self.prefix))
            .query_async(&mut conn)
            .await;
        match result {
            Ok(value) => {
                self.redis.report_success();
                match value.map(Lsn).max(self.local_token(scope)) {
                    Some(lsn) => Freshness::AtLeast(lsn),
                    // Redis may be missing a token whose write failed.
                    None if self.recent_failure() => Freshness::Primary,
                    None => Freshness::Any,
                }
            }
            Err(e) => {
                self.redis.report_failure(&e);
                Freshness::Primary
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_without_redis() -> WriteTokens {
        let config = crate::config::RedisConfig {
            url: crate::config::Secret::new("redis://127.0.0.1:1".to_owned()),
            key_prefix: "t:".to_owned(),
            connect_timeout: Duration::from_millis(50),
            response_timeout: Duration::from_millis(50),
        };
        let redis = Redis::new(
            &config,
            prometheus::IntCounter::new("e", "e").expect("metric"),
            prometheus::IntGauge::new("o", "o").expect("metric"),
        )
        .expect("lazy client");
        WriteTokens::new(redis, "t:", Duration::from_secs(30))
    }

    #[tokio::test]
    async fn a_token_whose_redis_write_failed_still_routes_this_users_reads() {
        let tokens = tokens_without_redis();
        let user = Uuid::now_v7();
        assert!(!tokens.record(user, Lsn(42)).await, "Redis is unreachable");
        assert_eq!(tokens.local_token(&user.to_string()), Some(Lsn(42)));
        assert!(tokens.recent_failure());
        // With Redis down, every read is routed to the primary.
        assert_eq!(tokens.freshness(user).await, Freshness::Primary);
        // A later, lower position never lowers the local token.
        tokens.record(user, Lsn(7)).await;
        assert_eq!(tokens.local_token(&user.to_string()), Some(Lsn(42)));
    }

    #[test]
    fn lsns_parse_compare_and_print_like_postgres() {
        let a: Lsn = "16/B374D848".parse().expect("lsn");
        assert_eq!(a.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(a.to_string(), "16/B374D848");
        let b: Lsn = "17/0".parse().expect("lsn");
        assert!(b > a);
        assert!("16".parse::<Lsn>().is_err());
        assert!("1/100000000".parse::<Lsn>().is_err());
    }
}
