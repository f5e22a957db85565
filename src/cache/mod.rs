//! Caching and the Redis client.
//!
//! - [`redis`]: the one shared Redis connection, with a circuit breaker.
//! - [`layered`]: `get_or_load` over an in-process L1 (moka) and Redis L2, with
//!   single flight and generation-based invalidation across instances.
//! - [`Namespace`]: what is cached, each with its own TTLs.

pub mod layered;
pub mod redis;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use layered::{Cache, Cached, announce_shard_map};

/// A family of cached values that is invalidated as a whole: a write bumps the
/// namespace's generation, and every key of the old generation becomes
/// unreachable at once (no `KEYS`, no `SCAN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// CivicQ cities (seeded reference data).
    Cities,
    /// Verb lists and conjugations (pure functions of the lexicon).
    Verbs,
    /// Exercise lists and single exercises (seeded).
    Exercises,
    /// A city's question lists (change with every question and vote).
    Questions,
    /// Popular questions across cities.
    Popular,
    /// CivicQ ballots: elections, contests and candidate profiles (change
    /// only when an administrator or a candidate edits them).
    Ballot,
}

impl Namespace {
    pub const ALL: [Namespace; 6] = [
        Namespace::Cities,
        Namespace::Verbs,
        Namespace::Exercises,
        Namespace::Questions,
        Namespace::Popular,
        Namespace::Ballot,
    ];

    pub const fn key(self) -> &'static str {
        match self {
            Namespace::Cities => "cities",
            Namespace::Verbs => "verbs",
            Namespace::Exercises => "exercises",
            Namespace::Questions => "questions",
            Namespace::Popular => "popular",
            Namespace::Ballot => "ballot",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// Default (L1, L2) time-to-live. Seeded and derived data lives long in
    /// Redis; lists that change with every vote live a few seconds, which is
    /// also the bound on how stale another resident's view may be.
    pub const fn default_ttls(self) -> Ttls {
        let (l1, l2) = match self {
            Namespace::Cities => (30, 600),
            // Conjugating costs a few microseconds, less than a Redis round
            // trip: verbs live in L1 only.
            Namespace::Verbs => (300, 0),
            Namespace::Exercises => (30, 600),
            Namespace::Questions => (2, 30),
            Namespace::Popular => (2, 15),
            // Every edit invalidates it at once: kept as long as cities.
            Namespace::Ballot => (30, 600),
        };
        Ttls {
            l1: Duration::from_secs(l1),
            l2: Duration::from_secs(l2),
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for Namespace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Namespace::ALL
            .into_iter()
            .find(|n| n.key() == s)
            .ok_or_else(|| format!("unknown cache namespace `{s}`"))
    }
}

/// How long a value stays in each layer. A zero L2 TTL keeps the namespace
/// out of Redis (L1 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttls {
    pub l1: Duration,
    pub l2: Duration,
}
