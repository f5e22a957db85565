//! The shared Redis connection. One multiplexed connection per instance
//! ([`ConnectionManager`]) carries every command; it is created without
//! connecting, reconnects by itself after Redis restarts, and every command is
//! bounded by short connect/response timeouts so a dead Redis costs a request
//! milliseconds, never a hang.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
}

impl Redis {
    pub fn new(config: &RedisConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.url.expose())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Self { manager })
    }

    /// A handle to the shared connection (cheap to clone).
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Round-trip time of a PING.
    pub async fn ping(&self) -> Result<Duration, redis::RedisError> {
        let started = Instant::now();
        let mut conn = self.connection();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(started.elapsed())
    }
}
