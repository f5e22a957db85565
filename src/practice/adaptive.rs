//! Choosing new practice (pure): a difficulty that follows the learner's
//! *recent* accuracy, and a focus on their weakest tenses and triggers.
//!
//! Recent accuracy is kept as the outcomes of the last [`RECENT_WINDOW`]
//! answers in one integer ([`RecentOutcomes`]), updated by the attempt's own
//! transaction under the learner's progress row lock, so reading it never
//! scans the attempt history. A window, not lifetime accuracy: a learner who
//! struggled for a month and now gets everything right should be challenged
//! now, and a slump should ease the next items at once.

/// How many of the latest answers make "recent" accuracy.
pub const RECENT_WINDOW: u8 = 20;

/// The difficulty of new items until there are [`MIN_RECENT_ANSWERS`] answers.
pub const START_DIFFICULTY: i16 = 2;

/// Fewer recent answers than this say too little to move the difficulty.
pub const MIN_RECENT_ANSWERS: u8 = 5;

/// A skill answered right at least this often (percent) is not a weakness.
pub const FOCUS_BELOW_PERCENT: i64 = 80;

const MASK: u32 = (1 << RECENT_WINDOW) - 1;

/// Right/wrong of a learner's last answers, at most [`RECENT_WINDOW`]; bit 0
/// is the newest answer, a set bit means it counted as correct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentOutcomes {
    bits: u32,
    len: u8,
}

impl RecentOutcomes {
    /// From the stored columns; out-of-range values are clamped and stray
    /// bits dropped, so a bad row can skew a suggestion but never panic.
    pub fn from_stored(bits: i32, len: i16) -> Self {
        let len = u8::try_from(len.clamp(0, i16::from(RECENT_WINDOW))).unwrap_or(0);
        let bits = u32::try_from(bits).unwrap_or(0) & Self::mask(len);
        Self { bits, len }
    }

    /// The values to store: (outcome bits, number of answers).
    pub fn to_stored(self) -> (i32, i16) {
        (
            i32::try_from(self.bits & MASK).unwrap_or(0),
            i16::from(self.len),
        )
    }

    fn mask(len: u8) -> u32 {
        if len >= RECENT_WINDOW {
            MASK
        } else {
            (1 << len) - 1
        }
    }

    /// The window after one more answer; the oldest one drops out when full.
    #[must_use]
    pub fn push(self, correct: bool) -> Self {
        Self {
            bits: ((self.bits << 1) | u32::from(correct)) & MASK,
            len: (self.len + 1).min(RECENT_WINDOW),
        }
    }

    /// How many answers the window holds.
    pub fn len(self) -> u8 {
        self.len
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// How many of them counted as correct.
    pub fn correct(self) -> u8 {
        u8::try_from(self.bits.count_ones()).unwrap_or(RECENT_WINDOW)
    }

    /// correct / answers in the window; None before the first answer.
    pub fn accuracy(self) -> Option<f64> {
        (self.len > 0).then(|| f64::from(self.correct()) / f64::from(self.len))
    }
}

/// The difficulty (1–5) to choose new items around: [`START_DIFFICULTY`]
/// until the window has [`MIN_RECENT_ANSWERS`] answers, then higher the
/// better the recent answers.
pub fn target_difficulty(recent: RecentOutcomes) -> i16 {
    let Some(accuracy) = recent.accuracy() else {
        return START_DIFFICULTY;
    };
    if recent.len() < MIN_RECENT_ANSWERS {
        return START_DIFFICULTY;
    }
    match accuracy {
        a if a >= 0.9 => 5,
        a if a >= 0.8 => 4,
        a if a >= 0.65 => 3,
        a if a >= 0.5 => 2,
        _ => 1,
    }
}

/// What a skill is: a tense or a trigger category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    Tense,
    Trigger,
}

impl Dimension {
    pub fn key(self) -> &'static str {
        match self {
            Dimension::Tense => "tense",
            Dimension::Trigger => "trigger",
        }
    }
}

/// A learner's record on one skill.
#[derive(Clone, Copy, Debug)]
pub struct SkillRecord<'a> {
    pub dimension: Dimension,
    pub key: &'a str,
    pub attempts: i32,
    pub correct: i32,
}

impl SkillRecord<'_> {
    /// Accuracy pulled towards 1/2 by one imaginary right and one wrong
    /// answer, so 0 of 1 ranks as less weak than 0 of 10.
    fn smoothed(&self) -> f64 {
        (f64::from(self.correct) + 1.0) / (f64::from(self.attempts) + 2.0)
    }

    fn is_weak(&self) -> bool {
        self.attempts > 0
            && 100 * i64::from(self.correct) < FOCUS_BELOW_PERCENT * i64::from(self.attempts)
    }
}

/// The skills new items should come from, weakest first, as
/// `dimension:key` (e.g. `tense:present_subjunctive`): those answered right
/// less than [`FOCUS_BELOW_PERCENT`] % of the time, by smoothed accuracy, then more attempts first (surer
/// evidence), then key. Skills never practised are not weaknesses; they come
/// in through the difficulty and variety of the rest.
pub fn focus(skills: &[SkillRecord<'_>]) -> Vec<String> {
    let mut weak: Vec<&SkillRecord<'_>> = skills.iter().filter(|s| s.is_weak()).collect();
    weak.sort_by(|a, b| {
        a.smoothed()
            .total_cmp(&b.smoothed())
            .then(b.attempts.cmp(&a.attempts))
            .then(a.key.cmp(b.key))
    });
    weak.into_iter()
        .map(|s| format!("{}:{}", s.dimension.key(), s.key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: RecentOutcomes, correct: bool, n: usize) -> RecentOutcomes {
        (0..n).fold(start, |r, _| r.push(correct))
    }

    #[test]
    fn the_window_keeps_only_the_last_twenty_answers() {
        let empty = RecentOutcomes::default();
        assert_eq!(empty.accuracy(), None);
        let r = run(empty, false, 25);
        assert_eq!((r.len(), r.correct()), (20, 0));
        let r = run(r, true, 5);
        assert_eq!((r.len(), r.correct()), (20, 5));
        assert_eq!(r.accuracy(), Some(0.25));
        // 20 more right answers push every wrong one out.
        let r = run(r, true, 20);
        assert_eq!(r.accuracy(), Some(1.0));
        let r = r.push(false);
        assert_eq!(r.correct(), 19);
    }

    #[test]
    fn stored_values_round_trip_and_bad_ones_are_clamped() {
        let r = run(run(RecentOutcomes::default(), true, 3), false, 2).push(true);
        let (bits, len) = r.to_stored();
        assert_eq!((bits, len), (0b11_1001, 6));
        assert_eq!(RecentOutcomes::from_stored(bits, len), r);
        assert_eq!(RecentOutcomes::from_stored(-1, 3).len(), 3);
        assert_eq!(RecentOutcomes::from_stored(-1, 3).correct(), 0);
        let clamped = RecentOutcomes::from_stored(i32::MAX, 99);
        assert_eq!((clamped.len(), clamped.correct()), (20, 20));
        let stray = RecentOutcomes::from_stored(0b1111, 2);
        assert_eq!(stray.correct(), 2, "bits beyond the length are dropped");
        assert!(RecentOutcomes::from_stored(5, -4).is_empty());
    }

    #[test]
    fn difficulty_starts_at_two_rises_after_right_answers_and_falls_after_wrong_ones() {
        let mut r = RecentOutcomes::default();
        assert_eq!(target_difficulty(r), START_DIFFICULTY);
        r = run(r, true, 4);
        assert_eq!(
            target_difficulty(r),
            START_DIFFICULTY,
            "too few answers yet"
        );
        r = r.push(true);
        assert_eq!(target_difficulty(r), 5, "a run of right answers");
        r = run(r, false, 3);
        assert_eq!(target_difficulty(r), 2, "5 of 8");
        r = run(r, false, 10);
        assert_eq!(target_difficulty(r), 1, "a run of wrong answers");
    }

    #[test]
    fn only_recent_answers_count_not_the_lifetime_record() {
        // 40 wrong, then 20 right: lifetime accuracy 1/3, recent 1.
        let r = run(run(RecentOutcomes::default(), false, 40), true, 20);
        assert_eq!(target_difficulty(r), 5);
        // And the reverse: a long good record does not hide a slump.
        let r = run(run(RecentOutcomes::default(), true, 100), false, 12);
        assert_eq!(r.accuracy(), Some(0.4));
        assert_eq!(target_difficulty(r), 1);
    }

    #[test]
    fn focus_lists_weak_skills_weakest_first() {
        let skill = |dimension, key, attempts, correct| SkillRecord {
            dimension,
            key,
            attempts,
            correct,
        };
        let skills = [
            skill(Dimension::Tense, "present_subjunctive", 10, 9),
            skill(Dimension::Tense, "imperfect_subjunctive_ra", 10, 2),
            skill(Dimension::Trigger, "wish", 1, 0),
            skill(Dimension::Trigger, "emotion", 4, 0),
            skill(Dimension::Trigger, "ojala", 5, 4),
            skill(Dimension::Trigger, "doubt_denial", 0, 0),
            skill(Dimension::Tense, "pluperfect_subjunctive_ra", 4, 0),
        ];
        assert_eq!(
            focus(&skills),
            [
                "trigger:emotion",                 // smoothed 1/6
                "tense:pluperfect_subjunctive_ra", // 1/6 too, same attempts: by key
                "tense:imperfect_subjunctive_ra",  // 3/12
                "trigger:wish",                    // 1/3: 0 of 1 is weak, but less sure
            ]
        );
        assert!(focus(&[]).is_empty());
    }
}
