//! Integration tests: one binary, run against a real PostgreSQL primary, a real
//! streaming replica and a real Redis that the harness starts once per run
//! (see `tests/support/services.rs`). Each test gets its own database.

#[path = "../support/services.rs"]
mod services;

mod support;

mod auth;
mod balancer;
mod cities;
mod http_stack;
mod lifecycle;
mod operations;
mod routing;
mod verbs;
