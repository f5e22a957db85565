//! Caching and the Redis client. The L1 (in-process) and L2 (Redis) cache layers
//! are built on [`redis::Redis`].

pub mod redis;
