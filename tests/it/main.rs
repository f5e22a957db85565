//! Integration tests: one binary, run against a real PostgreSQL primary, a real
//! streaming replica and a real Redis that the harness starts once per run
//! (see `tests/support/services.rs`). Each test gets its own database.

#[path = "../support/services.rs"]
mod services;

#[path = "../support/chaos.rs"]
mod chaos_proxy;

mod support;

mod account_deletion;
mod achievements;
mod auth;
mod backup;
mod balancer;
mod ballot;
mod cache;
mod capacity;
mod chaos;
mod cities;
mod exercises;
mod export;
mod fast_path;
mod http_stack;
mod idempotency;
mod leagues;
mod leeches;
mod lifecycle;
mod live;
mod operations;
mod pgbouncer;
mod practice;
mod questions;
mod review_stats;
mod routing;
mod settings;
mod shards;
mod verbs;
mod videos;
