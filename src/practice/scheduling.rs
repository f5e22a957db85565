//! Spaced repetition and rewards (pure): the FSRS grade of an attempt, the
//! card's next state, the XP it earns, levels and day streaks.
//!
//! The scheduler is FSRS (the `rs-fsrs` crate, default parameters, 90 %
//! target retention); the card state it needs is persisted per
//! (user, exercise) in `review_cards`.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rs_fsrs::{Card, FSRS, Parameters, Rating, State};

use crate::spanish::checker::Outcome;

/// A review card as stored in Postgres.
#[derive(Clone, Debug, PartialEq)]
pub struct CardState {
    pub due: DateTime<Utc>,
    pub stability: f64,
    pub difficulty: f64,
    pub elapsed_days: i64,
    pub scheduled_days: i64,
    pub reps: i32,
    pub lapses: i32,
    /// 0 new, 1 learning, 2 review, 3 relearning.
    pub state: i16,
    pub last_review: DateTime<Utc>,
}

impl CardState {
    fn to_card(&self) -> Card {
        Card {
            due: self.due,
            stability: self.stability,
            difficulty: self.difficulty,
            elapsed_days: self.elapsed_days,
            scheduled_days: self.scheduled_days,
            reps: self.reps,
            lapses: self.lapses,
            state: match self.state {
                1 => State::Learning,
                2 => State::Review,
                3 => State::Relearning,
                _ => State::New,
            },
            last_review: self.last_review,
        }
    }

    fn from_card(card: &Card) -> Self {
        Self {
            due: card.due,
            stability: card.stability,
            difficulty: card.difficulty,
            elapsed_days: card.elapsed_days,
            scheduled_days: card.scheduled_days,
            reps: card.reps,
            lapses: card.lapses,
            state: card.state as i16,
            last_review: card.last_review,
        }
    }
}

/// Seconds a confident learner needs for an exercise of `difficulty` (1–5).
fn expected_seconds(difficulty: u8) -> u32 {
    4 + 2 * u32::from(difficulty.clamp(1, 5))
}

/// The FSRS grade of an attempt: wrong → Again; right but with an accent
/// slip, or much slower than expected → Hard; right and quick → Easy;
/// otherwise Good. Without a duration, a right answer is Good.
pub fn grade(
    outcome: Outcome,
    counts_as_correct: bool,
    duration_ms: Option<u32>,
    difficulty: u8,
) -> Rating {
    if !counts_as_correct {
        return Rating::Again;
    }
    if outcome == Outcome::AccentMismatch {
        return Rating::Hard;
    }
    let expected_ms = expected_seconds(difficulty) * 1000;
    match duration_ms {
        Some(ms) if ms <= expected_ms / 2 => Rating::Easy,
        Some(ms) if ms > expected_ms * 3 => Rating::Hard,
        _ => Rating::Good,
    }
}

/// The card after reviewing it with `rating` at `now` (a new card when the
/// learner never saw this exercise), scheduled for the learner's
/// `desired_retention` (FSRS's target recall probability, 0.9 by default).
pub fn review(
    card: Option<&CardState>,
    rating: Rating,
    now: DateTime<Utc>,
    desired_retention: f64,
) -> CardState {
    let fsrs = FSRS::new(Parameters {
        request_retention: desired_retention,
        ..Parameters::default()
    });
    let card = card.map_or_else(Card::new, CardState::to_card);
    let next = fsrs.next(card, now, rating);
    CardState::from_card(&next.card)
}

/// Wrong answers after which an item becomes a leech: suspended from review
/// and listed for the learner, who has clearly not been helped by seeing it
/// again (Anki's default threshold).
pub const LEECH_FAILURES: i32 = 8;

/// XP for one attempt: effort counts a little, a right answer counts more the
/// harder the exercise; an accent slip earns half.
pub fn xp(outcome: Outcome, counts_as_correct: bool, difficulty: u8) -> i32 {
    let full = 10 + 5 * i32::from(difficulty.clamp(1, 5));
    match (outcome, counts_as_correct) {
        (Outcome::Correct, _) => full,
        (Outcome::AccentMismatch, true) => full / 2,
        _ => 1,
    }
}

/// How long after an answer was revealed (by a wrong attempt's feedback) a
/// right answer to the same exercise earns nothing: typing back what the
/// feedback just showed is not recall.
pub const REVEAL_COOLDOWN: TimeDelta = TimeDelta::minutes(10);

/// Why an attempt earned no XP.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum XpWithheld {
    /// The exercise is not due for review yet: an early review is practice,
    /// scheduled as usual, but it earns no XP (otherwise one item answered
    /// over and over would earn XP forever).
    NotDue,
    /// The answer was shown by a wrong attempt's feedback less than
    /// [`REVEAL_COOLDOWN`] ago.
    AnswerJustRevealed,
}

/// The XP an attempt earns and, when it earns none, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Award {
    pub xp: i32,
    pub withheld: Option<XpWithheld>,
}

/// XP for an attempt at `now` on an exercise whose card (before this attempt)
/// is `card` and whose answer was last revealed at `revealed_at`: XP is earned
/// once per review interval (a new exercise, or one that is due), and a right
/// answer right after the reveal earns nothing.
pub fn award(
    outcome: Outcome,
    counts_as_correct: bool,
    difficulty: u8,
    card: Option<&CardState>,
    revealed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Award {
    let withheld = if card.is_some_and(|c| c.due > now) {
        Some(XpWithheld::NotDue)
    } else if counts_as_correct && revealed_at.is_some_and(|at| now - at < REVEAL_COOLDOWN) {
        Some(XpWithheld::AnswerJustRevealed)
    } else {
        None
    };
    Award {
        xp: if withheld.is_some() {
            0
        } else {
            xp(outcome, counts_as_correct, difficulty)
        },
        withheld,
    }
}

/// Whether an attempt's feedback shows the learner an answer they did not
/// give: every verdict lists the accepted forms, so any answer not counted as
/// right has now seen them.
pub fn reveals_answer(counts_as_correct: bool) -> bool {
    !counts_as_correct
}

/// Level `n` starts at `50 * n * (n - 1)` XP: 0, 100, 300, 600, 1000…
pub fn level(xp: i64) -> Level {
    let mut level: i64 = 1;
    while 50 * (level + 1) * level <= xp.max(0) {
        level += 1;
    }
    let start = 50 * level * (level - 1);
    let next = 50 * (level + 1) * level;
    Level {
        level,
        xp_into_level: xp.max(0) - start,
        xp_for_next_level: next - start,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Level {
    pub level: i64,
    pub xp_into_level: i64,
    pub xp_for_next_level: i64,
}

/// (current, longest) streak after activity on `today`, given the last active
/// day. Days are the learner's own (their time zone).
pub fn streak(
    last_active: Option<NaiveDate>,
    current: i32,
    longest: i32,
    today: NaiveDate,
) -> (i32, i32) {
    let current = match last_active {
        Some(day) if day == today => current.max(1),
        Some(day) if day.succ_opt() == Some(today) => current + 1,
        _ => 1,
    };
    (current, longest.max(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(days: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
            .single()
            .expect("time")
            + Duration::days(days)
    }

    #[test]
    fn wrong_answers_grade_again_and_quick_right_ones_easy() {
        assert_eq!(
            grade(Outcome::Incorrect, false, Some(1000), 3),
            Rating::Again
        );
        assert_eq!(
            grade(Outcome::AccentMismatch, true, Some(1000), 3),
            Rating::Hard
        );
        assert_eq!(
            grade(Outcome::AccentMismatch, false, Some(1000), 3),
            Rating::Again
        );
        assert_eq!(grade(Outcome::Correct, true, Some(2000), 3), Rating::Easy);
        assert_eq!(grade(Outcome::Correct, true, Some(8000), 3), Rating::Good);
        assert_eq!(grade(Outcome::Correct, true, Some(60_000), 3), Rating::Hard);
        assert_eq!(grade(Outcome::Correct, true, None, 3), Rating::Good);
    }

    #[test]
    fn good_reviews_push_the_due_date_further_out_and_a_lapse_brings_it_back() {
        let first = review(None, Rating::Good, at(0), 0.9);
        assert!(first.due > at(0));
        let mut card = first;
        let mut last_interval = Duration::zero();
        for _ in 0..4 {
            let now = card.due;
            card = review(Some(&card), Rating::Good, now, 0.9);
            let interval = card.due - now;
            assert!(
                interval >= last_interval,
                "{interval} after {last_interval}"
            );
            last_interval = interval;
        }
        assert!(last_interval > Duration::days(3), "{last_interval}");
        let lapsed = review(Some(&card), Rating::Again, card.due, 0.9);
        assert_eq!(lapsed.lapses, card.lapses + 1);
        assert!(lapsed.due - card.due < Duration::days(1));
    }

    #[test]
    fn xp_is_earned_once_per_review_interval_and_not_right_after_a_reveal() {
        let hard = 5;
        let full = xp(Outcome::Correct, true, hard);
        let earned = |card: Option<&CardState>, revealed: Option<DateTime<Utc>>, now| {
            award(Outcome::Correct, true, hard, card, revealed, now)
        };
        // A new exercise earns full XP.
        assert_eq!(earned(None, None, at(0)).xp, full);
        // Answered again before it is due: nothing, and the reason.
        let card = review(None, Rating::Good, at(0), 0.9);
        assert!(card.due > at(0));
        let early = earned(Some(&card), None, at(0) + Duration::seconds(5));
        assert_eq!(
            early,
            Award {
                xp: 0,
                withheld: Some(XpWithheld::NotDue)
            }
        );
        // Once it is due, it earns again.
        assert_eq!(earned(Some(&card), None, card.due).xp, full);
        // A wrong answer is due again within minutes, but the right answer it
        // revealed earns nothing for the cooldown, then earns again.
        let wrong_at = card.due;
        let lapsed = review(Some(&card), Rating::Again, wrong_at, 0.9);
        assert!(reveals_answer(false) && !reveals_answer(true));
        assert!(lapsed.due - wrong_at < REVEAL_COOLDOWN, "{}", lapsed.due);
        assert_eq!(
            earned(Some(&lapsed), Some(wrong_at), lapsed.due).withheld,
            Some(XpWithheld::AnswerJustRevealed)
        );
        let later = (wrong_at + REVEAL_COOLDOWN).max(lapsed.due);
        assert_eq!(earned(Some(&lapsed), Some(wrong_at), later).xp, full);
        // A wrong answer is never "just revealed"; early, it earns nothing too.
        let retry = award(
            Outcome::Incorrect,
            false,
            hard,
            Some(&lapsed),
            Some(wrong_at),
            lapsed.due,
        );
        assert_eq!(retry.xp, 1);
        let farmed = award(Outcome::Incorrect, false, hard, Some(&card), None, at(0));
        assert_eq!(farmed.withheld, Some(XpWithheld::NotDue));
    }

    #[test]
    fn xp_rewards_difficulty_and_levels_grow_triangularly() {
        assert_eq!(xp(Outcome::Correct, true, 1), 15);
        assert_eq!(xp(Outcome::Correct, true, 5), 35);
        assert_eq!(xp(Outcome::AccentMismatch, true, 5), 17);
        assert_eq!(xp(Outcome::Incorrect, false, 5), 1);
        assert_eq!(level(0).level, 1);
        assert_eq!(level(99).level, 1);
        assert_eq!(level(100).level, 2);
        assert_eq!(
            level(300),
            Level {
                level: 3,
                xp_into_level: 0,
                xp_for_next_level: 300
            }
        );
        assert_eq!(level(-5).level, 1);
    }

    #[test]
    fn streaks_count_consecutive_days_and_reset_after_a_gap() {
        let d = |n| NaiveDate::from_ymd_opt(2026, 11, n).expect("date");
        assert_eq!(streak(None, 0, 0, d(1)), (1, 1));
        assert_eq!(streak(Some(d(1)), 1, 1, d(1)), (1, 1));
        assert_eq!(streak(Some(d(1)), 1, 1, d(2)), (2, 2));
        assert_eq!(streak(Some(d(2)), 2, 5, d(3)), (3, 5));
        assert_eq!(streak(Some(d(2)), 3, 5, d(9)), (1, 5));
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn a_higher_desired_retention_schedules_the_next_review_sooner() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let first = review(None, Rating::Good, at, 0.9);
        let relaxed = review(Some(&first), Rating::Good, first.due, 0.8);
        let strict = review(Some(&first), Rating::Good, first.due, 0.95);
        assert!(
            strict.due < relaxed.due,
            "{:?} vs {:?}",
            strict.due,
            relaxed.due
        );
    }
}
