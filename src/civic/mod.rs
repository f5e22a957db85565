//! CivicQ domain rules (pure, no I/O): question text and tags, ranking, and
//! who may read a question in each moderation status.

pub mod ranking;
pub mod text;
pub mod visibility;
