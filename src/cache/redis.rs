//! The shared Redis connection. One multiplexed connection per instance
//! ([`ConnectionManager`]) carries every command; it is created without
//! connecting, reconnects by itself after Redis restarts, and every command is
//! bounded by short connect/response timeouts so a dead Redis costs a request
//! milliseconds, never a hang.
//!
//! A circuit breaker sits in front of it. A failed command opens the circuit:
//! for [`SUSPEND_AFTER_FAILURE`] callers skip Redis and use their fallbacks at
//! once instead of each paying a timeout. Then the circuit is half-open:
//! exactly one caller is let through as a probe (the others keep using
//! fallbacks); its success closes the circuit, its failure opens it again.
//! The health monitor's PING ignores the breaker, so recovery is noticed within
//! one check interval even when no request probes. `redis_circuit_open` shows
//! the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

pub const SUSPEND_AFTER_FAILURE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    state: Arc<State>,
}

struct State {
    epoch: Instant,
    /// 0 while the circuit is closed; otherwise milliseconds since `epoch`
    /// before which callers must not try Redis (open), after which one
    /// caller may probe (half-open).
    suspended_until_ms: AtomicU64,
    errors: IntCounter,
    circuit_open: IntGauge,
}

impl Redis {
    pub fn new(
        config: &RedisConfig,
        errors: IntCounter,
        circuit_open: IntGauge,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.url.expose())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Self {
            manager,
            state: Arc::new(State {
                epoch: Instant::now(),
                suspended_until_ms: AtomicU64::new(0),
                errors,
                circuit_open,
            }),
        })
    }

    /// A handle to the shared connection (cheap to clone).
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.state.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn suspension_ms() -> u64 {
        u64::try_from(SUSPEND_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX)
    }

    /// May the caller use Redis now? True while the circuit is closed; false
    /// while it is open (use the fallback without trying); when half-open, true
    /// for exactly one caller, the probe, whose outcome must be reported.
    pub fn available(&self) -> bool {
        let until = self.state.suspended_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        // Half-open: whoever moves the deadline forward is the probe.
        self.state
            .suspended_until_ms
            .compare_exchange(
                until,
                now.saturating_add(Self::suspension_ms()),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub fn report_success(&self) {
        if self.state.suspended_until_ms.swap(0, Ordering::AcqRel) != 0 {
            self.state.circuit_open.set(0);
            tracing::info!("redis is reachable again; circuit closed");
        }
    }

    pub fn report_failure(&self, error: &redis::RedisError) {
        self.state.errors.inc();
        let until = self.now_ms().saturating_add(Self::suspension_ms());
        let previous = self.state.suspended_until_ms.swap(until, Ordering::AcqRel);
        if previous == 0 {
            self.state.circuit_open.set(1);
            tracing::warn!(error = %error, "redis command failed; circuit open, using fallbacks");
        }
    }

    /// Round-trip time of a PING (always tries, whatever the suspension).
    pub async fn ping(&self) -> Result<Duration, redis::RedisError> {
        let started = Instant::now();
        let mut conn = self.connection();
        let result: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
        match result {
            Ok(_) => {
                self.report_success();
                Ok(started.elapsed())
            }
            Err(e) => {
                self.report_failure(&e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn unreachable_redis() -> Redis {
        let config = RedisConfig {
            // Nothing listens on port 1; the connection is lazy anyway.
            url: Secret::new("redis://127.0.0.1:1".to_owned()),
            key_prefix: "test:".to_owned(),
            connect_timeout: Duration::from_millis(50),
            response_timeout: Duration::from_millis(50),
        };
        let errors = IntCounter::new("errors", "errors").expect("metric");
        let open = IntGauge::new("open", "open").expect("metric");
        Redis::new(&config, errors, open).expect("lazy client")
    }

    #[tokio::test]
    async fn the_circuit_opens_on_failure_and_lets_one_probe_through_when_half_open() {
        let redis = unreachable_redis();
        assert!(redis.available(), "closed at first");
        assert!(redis.ping().await.is_err());
        assert_eq!(redis.state.circuit_open.get(), 1);
        assert!(!redis.available(), "open right after a failure");

        tokio::time::sleep(SUSPEND_AFTER_FAILURE + Duration::from_millis(20)).await;
        assert!(redis.available(), "the first caller probes");
        assert!(!redis.available(), "everyone else waits for the probe");

        redis.report_success();
        assert_eq!(redis.state.circuit_open.get(), 0);
        assert!(redis.available() && redis.available(), "closed again");
    }
}
