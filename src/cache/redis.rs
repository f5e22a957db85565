//! The shared Redis connection. One multiplexed connection per instance
//! ([`ConnectionManager`]) carries every command; it is created without
//! connecting, reconnects by itself after Redis restarts, and every command is
//! bounded by short connect/response timeouts so a dead Redis costs a request
//! milliseconds, never a hang.
//!
//! After a failed command, callers skip Redis for [`SUSPEND_AFTER_FAILURE`]
//! (they use their fallbacks at once instead of each paying a timeout); the
//! first call after that tries again. The health monitor's PING ignores the
//! suspension, so recovery is noticed within one check interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
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
    /// Milliseconds since `epoch` before which callers should not try Redis.
    suspended_until_ms: AtomicU64,
    errors: IntCounter,
}

impl Redis {
    pub fn new(config: &RedisConfig, errors: IntCounter) -> Result<Self, redis::RedisError> {
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

    /// False for a moment after a failure: use the fallback without trying.
    pub fn available(&self) -> bool {
        self.now_ms() >= self.state.suspended_until_ms.load(Ordering::Relaxed)
    }

    pub fn report_success(&self) {
        self.state.suspended_until_ms.store(0, Ordering::Relaxed);
    }

    pub fn report_failure(&self, error: &redis::RedisError) {
        self.state.errors.inc();
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(SUSPEND_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX));
        let previous = self.state.suspended_until_ms.swap(until, Ordering::Relaxed);
        if previous <= self.now_ms() {
            tracing::warn!(error = %error, "redis command failed; using fallbacks for {SUSPEND_AFTER_FAILURE:?}");
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
