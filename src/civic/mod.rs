//! CivicQ domain rules: question text and tags, ranking, and who may read a
//! question in each moderation status (pure, no I/O); and who may answer
//! and rebut on a city's ballot (`ballot`, which reads the caller's
//! transaction: the one rule every kind of answer shares).

pub mod ballot;
pub mod ranking;
pub mod text;
pub mod visibility;
