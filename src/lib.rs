//! Reference web backend: subjunctive practice and CivicQ from one codebase,
//! built to show every stage of taking an API from one box to many.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; integration tests
//! build the same [`app::App`] against real Postgres and Redis.

pub mod app;
pub mod auth;
pub mod cache;
pub mod capacity;
pub mod civic;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod jobs;
pub mod leaderboard;
pub mod leagues;
pub mod live;
pub mod maintenance;
pub mod media;
pub mod metrics;
pub mod monitor;
pub mod openapi;
pub mod practice;
pub mod ratelimit;
pub mod seed;
pub mod server;
pub mod spanish;
pub mod telemetry;
pub mod text;
pub mod video;
pub mod worker;
