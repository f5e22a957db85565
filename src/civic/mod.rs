//! CivicQ domain rules (pure, no I/O): question text and tags, ranking.

pub mod ranking;
pub mod text;
