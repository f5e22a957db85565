//! A learner's practice settings (pure): how many new items a day, the FSRS
//! target retention, which tenses, how strictly accents count.

use crate::spanish::Tense;
use crate::spanish::checker::AccentPolicy;

pub const DEFAULT_DAILY_NEW_LIMIT: i32 = 20;
pub const MAX_DAILY_NEW_LIMIT: i32 = 500;
pub const DEFAULT_DESIRED_RETENTION: f64 = 0.9;
/// Below, intervals grow long enough that most reviews fail; above, they
/// shrink to a review every few hours for little gain.
pub const RETENTION_RANGE: std::ops::RangeInclusive<f64> = 0.7..=0.97;

#[derive(Clone, Debug, PartialEq)]
pub struct PracticeSettings {
    pub daily_new_limit: i32,
    pub desired_retention: f64,
    /// None: every tense.
    pub tenses: Option<Vec<Tense>>,
    /// None: the server's `PRACTICE_ACCENT_POLICY`.
    pub accent_policy: Option<AccentPolicy>,
}

impl Default for PracticeSettings {
    fn default() -> Self {
        Self {
            daily_new_limit: DEFAULT_DAILY_NEW_LIMIT,
            desired_retention: DEFAULT_DESIRED_RETENTION,
            tenses: None,
            accent_policy: None,
        }
    }
}

impl PracticeSettings {
    /// The tense keys to select new items and reviews by, or None for all.
    pub fn tense_keys(&self) -> Option<Vec<&'static str>> {
        self.tenses
            .as_ref()
            .map(|tenses| tenses.iter().map(|t| t.key()).collect())
    }

    /// New items still allowed today, after `introduced_today`.
    pub fn new_items_left(&self, introduced_today: i64) -> i64 {
        (i64::from(self.daily_new_limit) - introduced_today).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_new_limit_counts_down_and_never_below_zero() {
        let settings = PracticeSettings {
            daily_new_limit: 5,
            ..PracticeSettings::default()
        };
        assert_eq!(settings.new_items_left(0), 5);
        assert_eq!(settings.new_items_left(3), 2);
        assert_eq!(settings.new_items_left(9), 0);
    }
}
