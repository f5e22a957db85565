//! Rate limits shared by every instance, kept in Redis, with a per-instance
//! fallback when Redis is unreachable (never fail open completely, never fail
//! the request because the limiter's store is down).
//!
//! The algorithm is GCRA (generic cell rate algorithm): one timestamp per key,
//! the "theoretical arrival time" (TAT). It allows `limit` requests in a burst
//! and then one every `period / limit`, with no boundary bursts as in fixed
//! windows. Redis runs it atomically in a Lua script using Redis's own clock,
//! so instances with skewed clocks still agree.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

use crate::cache::redis::Redis;
use crate::config::parse_duration;

/// `limit` requests per `period`, e.g. `10/5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

impl Quota {
    /// Milliseconds between two requests at the sustained rate (at least 1).
    fn interval_ms(&self) -> i64 {
        (self.period_ms() / i64::from(self.limit)).max(1)
    }

    fn period_ms(&self) -> i64 {
        i64::try_from(self.period.as_millis()).unwrap_or(i64::MAX)
    }
}

impl FromStr for Quota {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (limit, period) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a quota (expected like 10/5m)"))?;
        let limit: u32 = limit
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the limit must be a positive integer"))?;
        let period = parse_duration(period)?;
        if limit == 0 || period.is_zero() {
            return Err(format!("{s:?}: limit and period must be greater than zero"));
        }
        Ok(Self { limit, period })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.limit, self.period.as_secs())
    }
}

/// The outcome of one check, with what the `RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the key is back to its full burst.
    pub reset: Duration,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

/// Whole seconds, rounded up (a client told "0" would retry at once).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds)
/// and, when refused, `Retry-After`.
pub fn set_headers(headers: &mut axum::http::HeaderMap, decision: &Decision) {
    use axum::http::HeaderValue;
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert(
        "ratelimit-reset",
        HeaderValue::from(ceil_secs(decision.reset)),
    );
    if !decision.allowed {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(decision.retry_after).max(1)),
        );
    }
}

/// One GCRA step: given the stored TAT (if any) and now, the decision and the
/// TAT to store (None when the request is refused and nothing changes).
pub fn gcra(stored_tat_ms: Option<i64>, now_ms: i64, quota: Quota) -> (Decision, Option<i64>) {
    let interval = quota.interval_ms();
    let period = quota.period_ms();
    let tat = stored_tat_ms.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat.saturating_add(interval);
    let ms = |v: i64| Duration::from_millis(u64::try_from(v.max(0)).unwrap_or(0));
    if new_tat - now_ms > period {
        let decision = Decision {
            allowed: false,
            limit: quota.limit,
            remaining: 0,
            reset: ms(tat - now_ms),
            retry_after: ms(new_tat - now_ms - period),
        };
        (decision, None)
    } else {
        let remaining = u32::try_from((period - (new_tat - now_ms)) / interval).unwrap_or(0);
        let decision = Decision {
            allowed: true,
            limit: quota.limit,
            remaining,
            reset: ms(new_tat - now_ms),
            retry_after: Duration::ZERO,
        };
        (decision, Some(new_tat))
    }
}

/// The same algorithm as [`gcra`], run atomically inside Redis. Returns
/// {allowed (0/1), tat-or-new-tat - now, now}.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > period then
  return {0, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, new_tat - now}
"#;

/// Per-instance fallback store: key -> TAT in ms since `epoch`.
struct Local {
    epoch: Instant,
    tats: Mutex<HashMap<String, i64>>,
}

/// Bound on keys the fallback keeps (about 10 MB at most).
const LOCAL_MAX_KEYS: usize = 100_000;

impl Local {
    fn check(&self, key: &str, quota: Quota) -> Decision {
        self.check_bounded(key, quota, LOCAL_MAX_KEYS, true)
    }

    /// Counts a request Redis decided on: `allowed_there` is Redis's answer.
    /// The quota is spent here only if both allow it; the local answer is
    /// returned (a refusal here overrides an allowance there).
    fn check_along(&self, key: &str, quota: Quota, allowed_there: bool) -> Decision {
        self.check_bounded(key, quota, LOCAL_MAX_KEYS, allowed_there)
    }

    /// When the store is full, expired keys go first; if that is not enough
    /// (a flood of distinct live keys), the half of the keys closest to
    /// expiry goes too. Forgetting a key lets its owner start over, so the
    /// ones forgotten are those that had spent the least of their quota.
    fn check_bounded(&self, key: &str, quota: Quota, max_keys: usize, spend: bool) -> Decision {
        let now = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        let Ok(mut tats) = self.tats.lock() else {
            // A poisoned lock only follows a panic elsewhere; refuse rather than
            // allow unlimited attempts.
            return gcra(Some(i64::MAX / 2), now, quota).0;
        };
        if tats.len() >= max_keys && !tats.contains_key(key) {
            tats.retain(|_, tat| *tat > now);
            // Down to three quarters at least, so that the next full scan is
            // a quarter of the store's inserts away (amortized O(1), even
            // when only a few keys expire at a time).
            if tats.len() >= max_keys / 4 * 3 {
                let mut by_tat: Vec<i64> = tats.values().copied().collect();
                let middle = by_tat.len() / 2;
                let (_, cut, _) = by_tat.select_nth_unstable(middle);
                let cut = *cut;
                tats.retain(|_, tat| *tat > cut);
            }
        }
        let (decision, new_tat) = gcra(tats.get(key).copied(), now, quota);
        if let Some(tat) = new_tat.filter(|_| spend) {
            tats.insert(key.to_owned(), tat);
        }
        decision
    }
}

/// Checks named limits against Redis, falling back to a local store.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Redis,
    prefix: Arc<str>,
    script: Arc<redis::Script>,
    local: Arc<Local>,
    decisions: IntCounterVec,
}

impl RateLimiter {
    pub fn new(redis: Redis, key_prefix: &str, decisions: IntCounterVec) -> Self {
        Self {
            redis,
            prefix: Arc::from(key_prefix),
            script: Arc::new(redis::Script::new(GCRA_LUA)),
            local: Arc::new(Local {
                epoch: Instant::now(),
                tats: Mutex::new(HashMap::new()),
            }),
            decisions,
        }
    }

    /// Counts one request against `name`/`key` (e.g. `login-ip`/`203.0.113.9`).
    pub async fn check(&self, name: &str, key: &str, quota: Quota) -> Decision {
        let redis_key = format!("{}rl:{name}:{key}", self.prefix);
        let (decision, backend) = match self.check_redis(&redis_key, quota).await {
            Some(remote) => {
                // The local store counts along what this instance allowed,
                // so neither a fallback nor Redis coming back empty (a
                // restart, a blip during which the fallback served) hands a
                // client a fresh quota: the stricter answer stands. The local
                // count never exceeds the true one (it sees one instance).
                let local = self.local.check_along(&redis_key, quota, remote.allowed);
                if remote.allowed && !local.allowed {
                    (local, "local")
                } else {
                    (remote, "redis")
                }
            }
            None => (self.local.check(&redis_key, quota), "local"),
        };
        let result = if decision.allowed {
            "allowed"
        } else {
            "limited"
        };
        self.decisions
            .with_label_values(&[name, result, backend])
            .inc();
        decision
    }

    async fn check_redis(&self, key: &str, quota: Quota) -> Option<Decision> {
        if !self.redis.available() {
            return None;
        }
        let mut conn = self.redis.connection();
        let mut invocation = self.script.key(key);
        invocation.arg(quota.interval_ms()).arg(quota.period_ms());
        match invocation.invoke_async::<(i64, i64)>(&mut conn).await {
            Ok((allowed, tat_minus_now)) => {
                self.redis.report_success();
                // Rebuild the decision from Redis's answer with the pure function,
                // so both stores compute headers the same way.
                let stored = if allowed == 1 {
                    Some(tat_minus_now - quota.interval_ms())
                } else {
                    Some(tat_minus_now)
                };
                Some(gcra(stored, 0, quota).0)
            }
            Err(e) => {
                self.redis.report_failure(&e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u32, secs: u64) -> Quota {
        Quota {
            limit,
            period: Duration::from_secs(secs),
        }
    }

    /// Runs `n` checks at time `now` against one stored TAT.
    fn burst(tat: &mut Option<i64>, now: i64, q: Quota, n: usize) -> Vec<bool> {
        (0..n)
            .map(|_| {
                let (d, new_tat) = gcra(*tat, now, q);
                if new_tat.is_some() {
                    *tat = new_tat;
                }
                d.allowed
            })
            .collect()
    }

    #[test]
    fn a_full_burst_is_allowed_and_the_next_request_is_not() {
        let q = quota(5, 60);
        let mut tat = None;
        assert_eq!(
            burst(&mut tat, 0, q, 6),
            vec![true, true, true, true, true, false]
        );
    }

    #[test]
    fn capacity_returns_at_the_sustained_rate() {
        let q = quota(5, 60); // one every 12 s
        let mut tat = None;
        burst(&mut tat, 0, q, 5);
        assert_eq!(burst(&mut tat, 11_000, q, 1), vec![false]);
        assert_eq!(burst(&mut tat, 12_000, q, 2), vec![true, false]);
    }

    #[test]
    fn remaining_and_retry_after_are_reported() {
        let q = quota(3, 30);
        let (first, tat) = gcra(None, 0, q);
        assert_eq!(first.remaining, 2);
        let (_, tat) = gcra(tat, 0, q);
        let (third, tat) = gcra(tat, 0, q);
        assert_eq!(third.remaining, 0);
        let (refused, _) = gcra(tat, 0, q);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        assert_eq!(refused.reset, Duration::from_secs(30));
    }

    #[test]
    fn the_redis_answer_rebuilds_the_same_decision() {
        // Redis returns new_tat - now when allowed, tat - now when refused.
        let q = quota(4, 40);
        let (local, new_tat) = gcra(Some(5_000), 0, q);
        let rebuilt = gcra(Some(new_tat.expect("allowed") - q.interval_ms()), 0, q).0;
        assert_eq!(local, rebuilt);
    }

    #[test]
    fn quotas_parse_from_configuration() {
        assert_eq!("10/5m".parse::<Quota>(), Ok(quota(10, 300)));
        assert!("0/1m".parse::<Quota>().is_err());
        assert!("ten/1m".parse::<Quota>().is_err());
        assert!("10".parse::<Quota>().is_err());
    }

    #[test]
    fn the_local_fallback_enforces_the_same_quota() {
        let local = Local {
            epoch: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        };
        let q = quota(2, 3600);
        assert!(local.check("k", q).allowed);
        assert!(local.check("k", q).allowed);
        assert!(!local.check("k", q).allowed);
        assert!(local.check("other", q).allowed);
    }

    #[test]
    fn counting_along_redis_spends_only_what_both_allow_and_keeps_the_stricter_answer() {
        let local = Local {
            epoch: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        };
        let q = quota(2, 3600);
        // Redis refused: nothing is spent here.
        assert!(local.check_along("k", q, false).allowed);
        assert!(local.check_along("k", q, false).allowed);
        // Two allowed by both, then Redis comes back empty and allows a
        // third: the local count refuses it.
        assert!(local.check_along("k", q, true).allowed);
        assert!(local.check_along("k", q, true).allowed);
        assert!(!local.check_along("k", q, true).allowed);
        // And the fallback goes on from there.
        assert!(!local.check("k", q).allowed);
    }

    #[test]
    fn the_local_fallback_stays_bounded_under_a_flood_of_live_keys() {
        let local = Local {
            epoch: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        };
        let q = quota(2, 3600);
        // A key that has spent its whole quota: the furthest from expiry.
        assert!(local.check_bounded("spent", q, 100, true).allowed);
        assert!(local.check_bounded("spent", q, 100, true).allowed);
        for i in 0..1_000 {
            local.check_bounded(&format!("flood-{i}"), q, 100, true);
            let len = local.tats.lock().expect("lock").len();
            assert!(len <= 100, "{len} keys after {i}");
        }
        // Those that spent the most are the last forgotten.
        assert!(!local.check_bounded("spent", q, 100, true).allowed);
    }
}
