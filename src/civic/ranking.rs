//! Ranking of questions.
//!
//! - `top`: net votes (up − down), then newest.
//! - `new`: newest first.
//! - `hot`: `sign(s) · log10(max(|s|, 1)) + t / 45000`, where `s` is the net
//!   score and `t` the creation time in Unix seconds. The first ten net votes
//!   count as much as the next ninety; 12.5 hours of age are worth a factor ten
//!   in net votes. The value does not depend on when it is read, so it is
//!   stored (updated with each vote) and indexed: "hot" pages come from an
//!   index like the other sorts.

use chrono::{DateTime, Utc};

/// Seconds of age that weigh as much as a factor 10 in net score.
pub const HOT_DECAY_SECONDS: f64 = 45_000.0;

pub fn hot(score: i64, created_at: DateTime<Utc>) -> f64 {
    // Scores are small integers: exact as f64.
    let magnitude = (score.unsigned_abs().max(1) as f64).log10();
    let sign = score.signum() as f64;
    let seconds = created_at.timestamp_millis() as f64 / 1000.0;
    sign * magnitude + seconds / HOT_DECAY_SECONDS
}

/// The sorts a city's question list offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Top,
    New,
    Hot,
}

impl Sort {
    pub fn from_key(key: &str) -> Option<Sort> {
        match key {
            "top" => Some(Sort::Top),
            "new" => Some(Sort::New),
            "hot" => Some(Sort::Hot),
            _ => None,
        }
    }

    pub const fn key(self) -> &'static str {
        match self {
            Sort::Top => "top",
            Sort::New => "new",
            Sort::Hot => "hot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn hot_grows_with_votes_and_with_recency() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        assert!(hot(10, t) > hot(1, t));
        assert!(hot(1, t) > hot(-5, t));
        assert!(hot(0, t + Duration::hours(1)) > hot(0, t));
        // Ten times the votes compensate 12.5 hours of age.
        let older = hot(100, t);
        let newer = hot(10, t + Duration::seconds(45_000));
        assert!((older - newer).abs() < 1e-9, "{older} vs {newer}");
    }

    #[test]
    fn sorts_parse_from_their_keys() {
        for sort in [Sort::Top, Sort::New, Sort::Hot] {
            assert_eq!(Sort::from_key(sort.key()), Some(sort));
        }
        assert_eq!(Sort::from_key("best"), None);
    }
}
