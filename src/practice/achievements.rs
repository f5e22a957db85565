//! Achievements, defined as data: each is a goal on one metric of the
//! learner's aggregates (never on the attempt history), so checking them costs
//! an attempt no extra query.
//!
//! An attempt awards, in its own transaction, the achievements whose goal it
//! crosses (met after it, not before); the insert is `ON CONFLICT DO NOTHING`
//! on (user, achievement), and a learner's attempts are serialized by their
//! progress row, so retries and concurrent attempts award each one once.
//! Listing them also records any goal met but not recorded (an achievement
//! added after the learner passed its goal), so adding one to [`ALL`] needs
//! no backfill job.

use serde::Serialize;
use utoipa::ToSchema;

use crate::spanish::Tense;
use crate::spanish::triggers::TriggerCategory;

/// What an achievement counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Attempts,
    Correct,
    Xp,
    /// The longest streak of practice days so far.
    Streak,
    /// Right answers on exercises in one tense.
    TenseCorrect(Tense),
    /// Trigger categories mastered (see [`mastered`]).
    TriggersMastered,
}

impl Metric {
    pub const fn key(self) -> &'static str {
        match self {
            Metric::Attempts => "attempts",
            Metric::Correct => "correct",
            Metric::Xp => "xp",
            Metric::Streak => "streak_days",
            Metric::TenseCorrect(_) => "tense_correct",
            Metric::TriggersMastered => "triggers_mastered",
        }
    }
}

pub struct Achievement {
    /// Stable key, stored with the award.
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub metric: Metric,
    pub goal: i64,
}

const fn a(
    id: &'static str,
    title: &'static str,
    description: &'static str,
    metric: Metric,
    goal: i64,
) -> Achievement {
    Achievement {
        id,
        title,
        description,
        metric,
        goal,
    }
}

/// A trigger category is mastered with at least this many right answers…
pub const MASTERY_CORRECT: i64 = 20;
/// …at this accuracy or better (percent).
pub const MASTERY_ACCURACY_PERCENT: i64 = 80;

/// Every achievement, in the order they are listed.
pub const ALL: &[Achievement] = &[
    a(
        "first_attempt",
        "First steps",
        "Answer your first exercise.",
        Metric::Attempts,
        1,
    ),
    a(
        "first_correct",
        "¡Bien hecho!",
        "Get an exercise right.",
        Metric::Correct,
        1,
    ),
    a(
        "attempts_100",
        "Centurion",
        "Answer 100 exercises.",
        Metric::Attempts,
        100,
    ),
    a(
        "attempts_1000",
        "Relentless",
        "Answer 1,000 exercises.",
        Metric::Attempts,
        1_000,
    ),
    a(
        "correct_500",
        "Sharp",
        "Get 500 exercises right.",
        Metric::Correct,
        500,
    ),
    a(
        "streak_7",
        "A week in a row",
        "Practise 7 days in a row.",
        Metric::Streak,
        7,
    ),
    a(
        "streak_30",
        "A month in a row",
        "Practise 30 days in a row.",
        Metric::Streak,
        30,
    ),
    a(
        "streak_100",
        "Unstoppable",
        "Practise 100 days in a row.",
        Metric::Streak,
        100,
    ),
    a("xp_1000", "1,000 XP", "Earn 1,000 XP.", Metric::Xp, 1_000),
    a(
        "xp_10000",
        "10,000 XP",
        "Earn 10,000 XP.",
        Metric::Xp,
        10_000,
    ),
    a(
        "present_subjunctive_100",
        "Present master",
        "Get 100 present subjunctive exercises right.",
        Metric::TenseCorrect(Tense::PresentSubjunctive),
        100,
    ),
    a(
        "imperfect_subjunctive_100",
        "Imperfect master",
        "Get 100 imperfect subjunctive (-ra) exercises right.",
        Metric::TenseCorrect(Tense::ImperfectSubjunctiveRa),
        100,
    ),
    a(
        "present_perfect_subjunctive_100",
        "Perfect master",
        "Get 100 present perfect subjunctive exercises right.",
        Metric::TenseCorrect(Tense::PresentPerfectSubjunctive),
        100,
    ),
    a(
        "pluperfect_subjunctive_100",
        "Pluperfect master",
        "Get 100 pluperfect subjunctive exercises right.",
        Metric::TenseCorrect(Tense::PluperfectSubjunctive),
        100,
    ),
    a(
        "all_triggers_mastered",
        "Trigger expert",
        "Master every trigger category: 20 right answers in each at 80 % accuracy or better.",
        Metric::TriggersMastered,
        TriggerCategory::ALL.len() as i64,
    ),
];

/// One skill's counts (`user_skill_stats`): dimension `tense` or `trigger`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Skill {
    pub dimension: String,
    pub key: String,
    pub attempts: i32,
    pub correct: i32,
}

/// The aggregates achievements are measured on.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub attempts: i64,
    pub correct: i64,
    pub xp: i64,
    pub longest_streak: i64,
    pub skills: Vec<Skill>,
}

/// Whether a skill's counts make it mastered.
pub fn mastered(attempts: i64, correct: i64) -> bool {
    correct >= MASTERY_CORRECT && correct * 100 >= attempts * MASTERY_ACCURACY_PERCENT
}

impl Totals {
    pub fn value(&self, metric: Metric) -> i64 {
        let skill = |dimension: &str, key: &str| {
            self.skills
                .iter()
                .find(|s| s.dimension == dimension && s.key == key)
        };
        match metric {
            Metric::Attempts => self.attempts,
            Metric::Correct => self.correct,
            Metric::Xp => self.xp,
            Metric::Streak => self.longest_streak,
            Metric::TenseCorrect(tense) => {
                skill("tense", tense.key()).map_or(0, |s| i64::from(s.correct))
            }
            Metric::TriggersMastered => TriggerCategory::ALL
                .iter()
                .filter(|t| {
                    skill("trigger", t.key())
                        .is_some_and(|s| mastered(i64::from(s.attempts), i64::from(s.correct)))
                })
                .count() as i64,
        }
    }

    /// Every achievement whose goal these totals meet.
    pub fn met(&self) -> impl Iterator<Item = &'static Achievement> + '_ {
        ALL.iter().filter(|a| self.value(a.metric) >= a.goal)
    }
}

/// The achievements met by `after` and not by `before`.
pub fn crossed(before: &Totals, after: &Totals) -> Vec<&'static Achievement> {
    ALL.iter()
        .filter(|a| after.value(a.metric) >= a.goal && before.value(a.metric) < a.goal)
        .collect()
}

pub fn by_id(id: &str) -> Option<&'static Achievement> {
    ALL.iter().find(|a| a.id == id)
}

/// An achievement just earned, as an attempt's response names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Earned {
    pub id: String,
    pub title: String,
}

impl From<&Achievement> for Earned {
    fn from(a: &Achievement) -> Self {
        Earned {
            id: a.id.to_owned(),
            title: a.title.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(dimension: &str, key: &str, attempts: i32, correct: i32) -> Skill {
        Skill {
            dimension: dimension.into(),
            key: key.into(),
            attempts,
            correct,
        }
    }

    #[test]
    fn ids_are_unique_and_goals_positive() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.goal > 0, "{}", a.id);
            assert!(ALL[i + 1..].iter().all(|b| b.id != a.id), "{}", a.id);
            assert!(
                a.id.len() <= 64
                    && a.id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }

    #[test]
    fn the_first_attempt_crosses_only_the_first_goals() {
        let before = Totals::default();
        let after = Totals {
            attempts: 1,
            correct: 1,
            xp: 10,
            longest_streak: 1,
            ..Totals::default()
        };
        let ids: Vec<_> = crossed(&before, &after).iter().map(|a| a.id).collect();
        assert_eq!(ids, ["first_attempt", "first_correct"]);
        assert!(crossed(&after, &after).is_empty(), "a goal is crossed once");
    }

    #[test]
    fn a_tense_goal_counts_right_answers_in_that_tense_only() {
        let at = |n| Totals {
            skills: vec![
                skill("tense", "present_subjunctive", n + 50, n),
                skill("tense", "imperfect_subjunctive_ra", 500, 99),
            ],
            ..Totals::default()
        };
        let ids: Vec<_> = crossed(&at(99), &at(100)).iter().map(|a| a.id).collect();
        assert_eq!(ids, ["present_subjunctive_100"]);
    }

    #[test]
    fn triggers_are_mastered_by_count_and_accuracy_together() {
        assert!(mastered(25, 20));
        assert!(!mastered(26, 20), "below 80 %");
        assert!(!mastered(19, 19), "too few right answers");
        let mut all = Totals {
            skills: TriggerCategory::ALL
                .iter()
                .map(|t| skill("trigger", t.key(), 20, 20))
                .collect(),
            ..Totals::default()
        };
        assert_eq!(all.value(Metric::TriggersMastered), 7);
        assert!(all.met().any(|a| a.id == "all_triggers_mastered"));
        all.skills[3].attempts = 40;
        assert_eq!(all.value(Metric::TriggersMastered), 6);
        assert!(!all.met().any(|a| a.id == "all_triggers_mastered"));
    }
}
