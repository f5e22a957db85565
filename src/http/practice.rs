//! Practice: submitting attempts (checked, scheduled, rewarded — one
//! transaction, idempotent), the learner's progress, and what to practise next.
//!
//! Everything here is per user: `Cache-Control: private, no-store`. Attempts
//! are written on the primary; progress, dashboard and practice reads go
//! through [`Db::read_consistent`](crate::db::Db::read_consistent): a replica
//! serves them once it has replayed the learner's latest write (whose position
//! [`remember_write`] records in Redis for every instance), else the primary.
//! So a learner always sees their own latest attempt, on any instance, and
//! everyone else's reads stay on the replicas.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::cache::Namespace;
use crate::db::UserDb;
use crate::db::consistency::Freshness;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::{AppJson, AppPath, AppQuery, optional_integer};
use crate::http::idempotency::{self, Guard, IdempotencyKey, Outcome as Idempotent};
use crate::http::limits::spend_user_limit;
use crate::http::pagination::bounded_int;
use crate::leaderboard::{XpTotals, week_bounds};
use crate::practice::achievements;
use crate::practice::adaptive::{self, Dimension, RecentOutcomes, SkillRecord};
use crate::practice::bank::ExerciseType;
use crate::practice::scheduling::{self, CardState, Level, XpWithheld};
use crate::spanish::checker::{self, ErrorCategory, Expected, Outcome};
use crate::spanish::triggers::TriggerCategory;
use crate::spanish::{Person, Tense};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_attempt))
        .routes(routes!(get_progress))
        .routes(routes!(next_items))
        .routes(routes!(get_dashboard))
}

const PRIVATE: &str = "private, no-store";
pub const MAX_ANSWER_CHARS: usize = 200;
pub const MAX_DURATION_MS: u32 = 3_600_000;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptRequest {
    /// The learner's answer: a verb form, or one of the exercise's `choices`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub answer: String,
    /// Time from showing the exercise to submitting, in milliseconds; quick
    /// right answers are scheduled further out.
    #[schema(minimum = 0, maximum = 3_600_000)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub duration_ms: Option<u32>,
}

impl AttemptRequest {
    fn validate(&self) -> AppResult<()> {
        let mut errors = Vec::new();
        let chars = self.answer.trim().chars().count();
        if chars == 0 || chars > MAX_ANSWER_CHARS {
            errors.push(FieldError::new(
                "answer",
                "must be 1 to 200 characters (not only spaces)",
            ));
        } else if !crate::text::is_single_line(&self.answer) {
            errors.push(FieldError::new(
                "answer",
                "must not contain control characters",
            ));
        }
        if self.duration_ms.is_some_and(|d| d > MAX_DURATION_MS) {
            errors.push(FieldError::new(
                "duration_ms",
                "must be at most 3600000 (one hour)",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(errors))
        }
    }
}

/// The verdict on one attempt and what it changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptResult {
    pub attempt_id: Uuid,
    pub exercise_id: i64,
    /// `correct`, `accent_mismatch` or `incorrect`.
    #[schema(value_type = String)]
    pub result: Outcome,
    /// Whether it scored as right (an accent slip does, with a warning).
    pub counts_as_correct: bool,
    /// The diagnosed mistake, when incorrect.
    #[schema(value_type = Option<String>)]
    pub error_category: Option<ErrorCategory>,
    /// What this answer got right or wrong.
    pub explanation: String,
    /// The rule the exercise drills, naming its trigger.
    pub rule: String,
    /// Every accepted answer, canonical first.
    pub accepted: Vec<String>,
    pub xp_earned: i32,
    /// Why `xp_earned` is 0 when the answer would otherwise earn XP: the
    /// exercise is not due for review yet (`not_due`), or its answer was shown
    /// by a wrong attempt less than 10 minutes ago (`answer_just_revealed`).
    /// XP is earned once per review interval.
    pub xp_withheld: Option<XpWithheld>,
    pub total_xp: i64,
    /// XP earned in this ISO week (UTC), as on the weekly leaderboard.
    pub weekly_xp: i64,
    pub level: Level,
    pub current_streak: i32,
    /// When this exercise is next due for review (FSRS).
    pub next_review_at: DateTime<Utc>,
    /// The exercise is a leech: answered wrong 8 times, suspended from review
    /// until the learner brings it back (`GET /users/me/leeches`).
    pub leech: bool,
    /// Achievements this attempt earned (usually none; see
    /// `GET /users/me/achievements`).
    pub achievements: Vec<achievements::Earned>,
    pub created_at: DateTime<Utc>,
}

/// What the checker and the scheduler need from an exercise row. Exercises
/// are reference data (only the seed writes them, and it invalidates the
/// exercises namespace), so attempts read it through the cache.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
struct ExerciseKey {
    kind: String,
    infinitive: String,
    person: String,
    tense: String,
    trigger: Option<String>,
    difficulty: i16,
    accepted: Vec<String>,
    choices: Vec<String>,
    explanation: String,
}

/// Checks an answer, records the attempt, reschedules the exercise for this
/// learner (FSRS) and updates their progress — all in one transaction.
/// Honors `Idempotency-Key`: a retry returns the first response and records
/// nothing twice.
#[utoipa::path(post, path = "/exercises/{id}/attempts", tag = "practice",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "Exercise id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the first response",
            min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    request_body = AttemptRequest,
    responses(
        (status = 201, description = "The verdict (a replay carries `Idempotent-Replayed: true`)", body = AttemptResult),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such exercise", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid answer, duration or reused Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts this minute (RATE_LIMIT_ATTEMPTS_USER); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable; safe to retry with the same key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit_attempt(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(exercise_id): AppPath<i64>,
    key: Option<IdempotencyKey>,
    AppJson(request): AppJson<AttemptRequest>,
) -> AppResult<Response> {
    request.validate()?;
    let exercise = exercise_key(&state, exercise_id).await?;
    let corrupt = || AppError::Internal(anyhow::anyhow!("exercise {exercise_id} has unknown keys"));
    let kind = ExerciseType::from_key(&exercise.kind).ok_or_else(corrupt)?;
    let tense = Tense::from_key(&exercise.tense).ok_or_else(corrupt)?;
    let person = Person::from_key(&exercise.person).ok_or_else(corrupt)?;
    let trigger = exercise
        .trigger
        .as_deref()
        .map(|t| TriggerCategory::from_key(t).ok_or_else(corrupt))
        .transpose()?;
    let difficulty = u8::try_from(exercise.difficulty).unwrap_or(3);
    let verdict = checker::check(
        &Expected {
            free_text: matches!(
                kind,
                ExerciseType::Conjugation | ExerciseType::SequenceOfTenses
            ),
            infinitive: &exercise.infinitive,
            person,
            tense,
            trigger,
            accepted: &exercise.accepted,
            choices: &exercise.choices,
        },
        &request.answer,
        user.settings
            .accent_policy
            .unwrap_or(state.config.practice.accent_policy),
    );

    let fingerprint = idempotency::fingerprint(
        "POST",
        &format!("/exercises/{exercise_id}/attempts"),
        &request,
    )?;
    let guard = key.as_ref().map(|key| Guard {
        user_id: user.id,
        key,
        fingerprint,
    });
    // The learner's shard holds their history, and the key of this write.
    let shard = state.db.user(user.id)?;
    // A retry of an attempt that was recorded is answered before the limit.
    if let Some(guard) = &guard
        && let Some(replay) = idempotency::replay(shard.write(), guard).await?
    {
        return Ok(replay);
    }
    spend_user_limit(
        &state,
        user.id,
        "attempts-user",
        state.config.practice.attempts_per_user,
    )
    .await?;
    let recorded = Recorded {
        user_id: user.id,
        timezone: user.timezone.clone(),
        desired_retention: user.settings.desired_retention,
        exercise_id,
        tense,
        trigger,
        difficulty,
        answer: request.answer.trim().to_owned(),
        duration_ms: request.duration_ms,
        verdict,
        rule: exercise.explanation,
    };
    let outcome = idempotency::transaction(shard.write(), guard, StatusCode::CREATED, async |tx| {
        recorded.save(tx, &shard).await
    })
    .await?;
    if let Idempotent::Done { value, .. } = &outcome {
        let totals = XpTotals {
            all_time: value.total_xp,
            week: value.weekly_xp,
            at: value.created_at,
        };
        // Independent, so concurrent: on the multiplexed Redis connection
        // their commands share round trips. The learner's own standing goes
        // to their live connections only: one EXISTS per attempt, the ranks
        // only when someone follows them.
        let ((), (), watched) = tokio::join!(
            remember_user_write(&state, &shard, user.id),
            state.leaderboard.record(user.id, totals),
            state.live.is_watched(user.id),
        );
        if watched
            && let Ok([weekly, all_time]) = state.leaderboard.standing(user.id, totals.at).await
        {
            let standing = |s: Option<(i64, i64)>| {
                s.map(|(rank, xp)| serde_json::json!({"rank": rank, "xp": xp}))
            };
            state
                .live
                .publish(
                    &crate::live::Topic::User(user.id),
                    "leaderboard.rank",
                    &serde_json::json!({"weekly": standing(weekly), "all_time": standing(all_time)}),
                )
                .await;
        }
    }
    Ok(outcome.into_response())
}

/// An exercise's answer key, from the cache (an L1 hit costs a JSON parse of
/// a few hundred bytes, less than the round trip it saves) or any replica.
async fn exercise_key(state: &AppState, exercise_id: i64) -> AppResult<ExerciseKey> {
    let cached = state
        .cache
        .get_or_load(
            Namespace::Exercises,
            &format!("answer-key:{exercise_id}"),
            || async {
                state
                    .db
                    .read(|pool| async move {
                        sqlx::query_as::<_, ExerciseKey>(
                            "SELECT kind, infinitive, person, tense, trigger, difficulty,
                                    accepted, choices, explanation
                               FROM exercises WHERE id = $1",
                        )
                        .bind(exercise_id)
                        .fetch_optional(&pool)
                        .await
                    })
                    .await?
                    .ok_or_else(|| AppError::NotFound(format!("No exercise with id {exercise_id}")))
            },
        )
        .await?;
    serde_json::from_slice(&cached.body).map_err(|e| AppError::Internal(e.into()))
}

/// The consistency-token scope of a user's per-user rows on a shard; None
/// without sharding, where they share the user's main token.
fn shard_scope(shard: &UserDb, user_id: Uuid) -> Option<String> {
    shard
        .is_sharded()
        .then(|| format!("shard:{}:{user_id}", shard.shard()))
}

/// Records the position of a per-user write on the user's shard, so their
/// next reads of per-user rows see it even from a lagging replica of that
/// shard.
pub async fn remember_user_write(state: &AppState, shard: &UserDb, user_id: Uuid) {
    let Some(scope) = shard_scope(shard, user_id) else {
        return remember_write(state, user_id).await;
    };
    match shard.current_lsn().await {
        Ok(lsn) => {
            state.write_tokens.record_scope(&scope, lsn).await;
        }
        Err(e) => tracing::warn!(error = %e, "could not read the commit position"),
    }
}

/// What a read of `user_id`'s per-user rows on `shard` must observe.
pub async fn user_freshness(state: &AppState, shard: &UserDb, user_id: Uuid) -> Freshness {
    if shard.recently_moved() {
        return Freshness::Primary;
    }
    match shard_scope(shard, user_id) {
        Some(scope) => state.write_tokens.freshness_scope(&scope).await,
        None => state.write_tokens.freshness(user_id).await,
    }
}

/// Records the position of the user's write on main, so their next reads (on
/// any instance) see it even from a lagging replica (`db::consistency`).
pub async fn remember_write(state: &AppState, user_id: Uuid) {
    match state.db.current_lsn().await {
        Ok(lsn) => {
            state.write_tokens.record(user_id, lsn).await;
        }
        // Committed, but the primary went away right after: the user's reads
        // fall back to the primary or a replica that may not have it yet; the
        // token TTL is short either way.
        Err(e) => tracing::warn!(error = %e, "could not read the commit position"),
    }
}

/// An attempt ready to be written.
struct Recorded {
    user_id: Uuid,
    /// The learner's time zone: their day, for streaks.
    timezone: std::sync::Arc<str>,
    /// The learner's FSRS target retention.
    desired_retention: f64,
    exercise_id: i64,
    tense: Tense,
    trigger: Option<TriggerCategory>,
    difficulty: u8,
    answer: String,
    duration_ms: Option<u32>,
    verdict: checker::Verdict,
    rule: String,
}

/// What [`Recorded::save`] reads before it writes: the fence's answer, the
/// learner's progress (locked) and this exercise's card, if any
/// (`attempt_context`, migration 0023).
#[derive(sqlx::FromRow)]
struct AttemptContext {
    fence: String,
    attempts: Option<i32>,
    correct: Option<i32>,
    xp: Option<i64>,
    current_streak: Option<i32>,
    longest_streak: Option<i32>,
    last_active_day: Option<NaiveDate>,
    recent_outcomes: Option<i32>,
    recent_count: Option<i16>,
    today: Option<NaiveDate>,
    now: Option<DateTime<Utc>>,
    card_due: Option<DateTime<Utc>>,
    card_stability: Option<f64>,
    card_difficulty: Option<f64>,
    card_elapsed_days: Option<i64>,
    card_scheduled_days: Option<i64>,
    card_reps: Option<i32>,
    card_lapses: Option<i32>,
    card_state: Option<i16>,
    card_last_review: Option<DateTime<Utc>>,
    card_revealed_at: Option<DateTime<Utc>>,
}

/// The learner's progress row as the attempt found it.
struct ProgressRow {
    attempts: i32,
    correct: i32,
    xp: i64,
    current_streak: i32,
    longest_streak: i32,
    last_active_day: Option<NaiveDate>,
    recent_outcomes: i32,
    recent_count: i16,
    today: NaiveDate,
    now: DateTime<Utc>,
}

impl AttemptContext {
    /// The progress and the card; None for a column the function always
    /// sets past the fence (a schema that does not match this code).
    fn split(self) -> Option<(ProgressRow, Option<CardRow>)> {
        let progress = ProgressRow {
            attempts: self.attempts?,
            correct: self.correct?,
            xp: self.xp?,
            current_streak: self.current_streak?,
            longest_streak: self.longest_streak?,
            last_active_day: self.last_active_day,
            recent_outcomes: self.recent_outcomes?,
            recent_count: self.recent_count?,
            today: self.today?,
            now: self.now?,
        };
        let card = match self.card_due {
            None => None,
            Some(due) => Some(CardRow {
                due,
                stability: self.card_stability?,
                difficulty: self.card_difficulty?,
                elapsed_days: self.card_elapsed_days?,
                scheduled_days: self.card_scheduled_days?,
                reps: self.card_reps?,
                lapses: self.card_lapses?,
                state: self.card_state?,
                last_review: self.card_last_review?,
                revealed_at: self.card_revealed_at,
            }),
        };
        Some((progress, card))
    }
}

/// One row per skill the attempt counted (with the other triggers' counts
/// when asked), each carrying the card's leech flag and the week's XP.
#[derive(sqlx::FromRow)]
struct WrittenRow {
    leech: bool,
    weekly_xp: i64,
    #[sqlx(flatten)]
    skill: achievements::Skill,
}

impl Recorded {
    /// Two statements between BEGIN and COMMIT (three when a goal is
    /// reached): `attempt_context` passes the fence, locks the learner's
    /// progress (serializing their attempts, so the card and totals never
    /// race) and reads it with the card; then one statement writes the card,
    /// the attempt, the progress, the skills and the week's XP.
    async fn save(self, tx: &mut PgConnection, shard: &UserDb) -> AppResult<AttemptResult> {
        let verdict = self.verdict;
        let context =
            sqlx::query_as::<_, AttemptContext>("SELECT * FROM attempt_context($1, $2, $3, $4)")
                .bind(self.user_id)
                .bind(self.exercise_id)
                .bind(self.timezone.as_ref())
                .bind(shard.fence_bucket())
                .fetch_one(&mut *tx)
                .await?;
        shard.check_fence(&context.fence)?;
        let (progress, previous) = context.split().ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "attempt_context returned an incomplete row"
            ))
        })?;
        let now = progress.now;

        let rating = scheduling::grade(
            verdict.outcome,
            verdict.counts_as_correct,
            self.duration_ms,
            self.difficulty,
        );
        let revealed_at = previous.as_ref().and_then(|row| row.revealed_at);
        // A card existed: this attempt reviews an item seen before.
        let was_review = previous.is_some();
        let previous = previous.map(CardState::from);
        // Judged against the card as it was before this attempt.
        let award = scheduling::award(
            verdict.outcome,
            verdict.counts_as_correct,
            self.difficulty,
            previous.as_ref(),
            revealed_at,
            now,
        );
        let xp = award.xp;
        let card = scheduling::review(previous.as_ref(), rating, now, self.desired_retention);
        let revealed_now = scheduling::reveals_answer(verdict.counts_as_correct);
        let (current_streak, longest_streak) = scheduling::streak(
            progress.last_active_day,
            progress.current_streak,
            progress.longest_streak,
            progress.today,
        );
        let correct = i32::from(verdict.counts_as_correct);
        let (recent_outcomes, recent_count) =
            RecentOutcomes::from_stored(progress.recent_outcomes, progress.recent_count)
                .push(verdict.counts_as_correct)
                .to_stored();
        let mut dimensions = vec![("tense", self.tense.key())];
        if let Some(trigger) = self.trigger {
            dimensions.push(("trigger", trigger.key()));
        }
        let (names, keys): (Vec<&str>, Vec<&str>) = dimensions.into_iter().unzip();
        // With a right answer on a trigger (which could complete the set), the
        // other triggers' counts come back too: the achievements below are
        // measured on them.
        let with_triggers = verdict.counts_as_correct && self.trigger.is_some();
        let attempt_id = Uuid::now_v7();
        // Data-modifying CTEs all run, on one snapshot, whether or not the
        // final SELECT reads them; each writes a different table.
        let written = sqlx::query_as::<_, WrittenRow>(
            "WITH card AS (
                 INSERT INTO review_cards (user_id, exercise_id, due, stability, difficulty,
                        elapsed_days, scheduled_days, reps, lapses, state, last_review,
                        revealed_at, failures)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                         CASE WHEN $12 THEN $11::timestamptz END, $13)
                 ON CONFLICT (user_id, exercise_id) DO UPDATE
                    SET due = EXCLUDED.due, stability = EXCLUDED.stability,
                        difficulty = EXCLUDED.difficulty, elapsed_days = EXCLUDED.elapsed_days,
                        scheduled_days = EXCLUDED.scheduled_days, reps = EXCLUDED.reps,
                        lapses = EXCLUDED.lapses, state = EXCLUDED.state,
                        last_review = EXCLUDED.last_review,
                        revealed_at = COALESCE(EXCLUDED.revealed_at, review_cards.revealed_at),
                        failures = review_cards.failures + EXCLUDED.failures,
                        -- A leech from the wrong answer that reaches the threshold.
                        suspended_at = CASE
                            WHEN review_cards.suspended_at IS NULL AND EXCLUDED.failures > 0
                                 AND review_cards.failures + EXCLUDED.failures >= $14
                            THEN EXCLUDED.last_review
                            ELSE review_cards.suspended_at END
                 RETURNING suspended_at IS NOT NULL AS leech),
             attempt AS (
                 INSERT INTO attempts (user_id, created_at, id, exercise_id, answer, outcome,
                        counts_as_correct, error_category, duration_ms, xp, was_review)
                 VALUES ($1, $15, $16, $2, $17, $18, $19, $20, $21, $22, $23)),
             progress AS (
                 UPDATE user_progress
                    SET attempts = attempts + 1, correct = correct + $24, xp = xp + $22::bigint,
                        current_streak = $25, longest_streak = $26, last_active_day = $27,
                        recent_outcomes = $28, recent_count = $29, updated_at = now()
                  WHERE user_id = $1),
             skills AS (
                 INSERT INTO user_skill_stats AS s (user_id, dimension, key, attempts, correct)
                 SELECT $1, d, k, 1, $24 FROM UNNEST($30::text[], $31::text[]) AS x(d, k)
                 ON CONFLICT (user_id, dimension, key) DO UPDATE
                    SET attempts = s.attempts + 1, correct = s.correct + EXCLUDED.correct
                 RETURNING s.dimension, s.key, s.attempts, s.correct),
             weekly AS (
                 INSERT INTO user_weekly_xp AS w (user_id, week, xp) VALUES ($1, $33, $22)
                 ON CONFLICT (user_id, week) DO UPDATE SET xp = w.xp + EXCLUDED.xp
                 RETURNING w.xp),
             counted AS (
                 SELECT dimension, key, attempts, correct FROM skills
                 UNION ALL
                 SELECT dimension, key, attempts, correct FROM user_skill_stats
                  WHERE $32 AND user_id = $1 AND dimension = 'trigger'
                    AND key <> ALL ($31::text[]))
             SELECT card.leech, weekly.xp AS weekly_xp,
                    counted.dimension, counted.key, counted.attempts, counted.correct
               FROM counted, card, weekly",
        )
        .bind(self.user_id) // $1
        .bind(self.exercise_id)
        .bind(card.due)
        .bind(card.stability)
        .bind(card.difficulty) // $5
        .bind(card.elapsed_days)
        .bind(card.scheduled_days)
        .bind(card.reps)
        .bind(card.lapses)
        .bind(card.state) // $10
        .bind(card.last_review)
        .bind(revealed_now)
        .bind(i32::from(!verdict.counts_as_correct))
        .bind(scheduling::LEECH_FAILURES)
        .bind(now) // $15
        .bind(attempt_id)
        .bind(&self.answer)
        .bind(outcome_key(verdict.outcome))
        .bind(verdict.counts_as_correct)
        .bind(verdict.error.map(ErrorCategory::key)) // $20
        .bind(
            self.duration_ms
                .map(|d| i32::try_from(d).unwrap_or(i32::MAX)),
        )
        .bind(i64::from(xp))
        .bind(was_review)
        .bind(correct)
        .bind(current_streak) // $25
        .bind(longest_streak)
        .bind(progress.today)
        .bind(recent_outcomes)
        .bind(recent_count)
        .bind(&names) // $30
        .bind(&keys)
        .bind(with_triggers)
        .bind(week_bounds(now).0)
        .fetch_all(&mut *tx)
        .await?;
        let first = written.first().ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("the attempt's writes returned no row"))
        })?;
        let (leech, weekly_xp) = (first.leech, first.weekly_xp);
        let after_skills: Vec<achievements::Skill> =
            written.into_iter().map(|row| row.skill).collect();

        let total_xp = progress.xp + i64::from(xp);
        let after = achievements::Totals {
            attempts: i64::from(progress.attempts) + 1,
            correct: i64::from(progress.correct) + i64::from(correct),
            xp: total_xp,
            longest_streak: i64::from(longest_streak),
            skills: after_skills,
        };
        let before = achievements::Totals {
            attempts: i64::from(progress.attempts),
            correct: i64::from(progress.correct),
            xp: progress.xp,
            longest_streak: i64::from(progress.longest_streak),
            // This attempt's skills, one attempt earlier.
            skills: after
                .skills
                .iter()
                .map(|s| {
                    let this = names
                        .iter()
                        .zip(&keys)
                        .any(|(d, k)| *d == s.dimension && *k == s.key);
                    achievements::Skill {
                        attempts: s.attempts - i32::from(this),
                        correct: s.correct - if this { correct } else { 0 },
                        ..s.clone()
                    }
                })
                .collect(),
        };
        let crossed = achievements::crossed(&before, &after);
        let achievements = if crossed.is_empty() {
            Vec::new()
        } else {
            award_achievements(&mut *tx, self.user_id, &crossed, now).await?
        };
        Ok(AttemptResult {
            attempt_id,
            exercise_id: self.exercise_id,
            result: verdict.outcome,
            counts_as_correct: verdict.counts_as_correct,
            error_category: verdict.error,
            explanation: verdict.explanation,
            rule: self.rule,
            accepted: verdict.accepted,
            xp_earned: xp,
            xp_withheld: award.withheld,
            total_xp,
            weekly_xp,
            level: scheduling::level(total_xp),
            current_streak,
            next_review_at: card.due,
            leech,
            achievements,
            created_at: now,
        })
    }
}

/// Records `reached` for `user` (those not recorded already) and returns the
/// ones this call recorded.
pub async fn award_achievements(
    tx: &mut PgConnection,
    user: Uuid,
    reached: &[&'static achievements::Achievement],
    at: DateTime<Utc>,
) -> AppResult<Vec<achievements::Earned>> {
    let ids: Vec<&str> = reached.iter().map(|a| a.id).collect();
    let recorded: Vec<String> = sqlx::query_scalar(
        "INSERT INTO user_achievements (user_id, achievement, earned_at)
         SELECT $1, id, $3 FROM UNNEST($2::text[]) AS x(id)
         ON CONFLICT DO NOTHING
         RETURNING achievement",
    )
    .bind(user)
    .bind(&ids)
    .bind(at)
    .fetch_all(&mut *tx)
    .await?;
    Ok(reached
        .iter()
        .filter(|a| recorded.iter().any(|r| r == a.id))
        .map(|a| achievements::Earned::from(*a))
        .collect())
}

fn outcome_key(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Correct => "correct",
        Outcome::AccentMismatch => "accent_mismatch",
        Outcome::Incorrect => "incorrect",
    }
}

/// A review card as `attempt_context` returned it.
struct CardRow {
    due: DateTime<Utc>,
    stability: f64,
    difficulty: f64,
    elapsed_days: i64,
    scheduled_days: i64,
    reps: i32,
    lapses: i32,
    state: i16,
    last_review: DateTime<Utc>,
    revealed_at: Option<DateTime<Utc>>,
}

impl From<CardRow> for CardState {
    fn from(r: CardRow) -> Self {
        CardState {
            due: r.due,
            stability: r.stability,
            difficulty: r.difficulty,
            elapsed_days: r.elapsed_days,
            scheduled_days: r.scheduled_days,
            reps: r.reps,
            lapses: r.lapses,
            state: r.state,
            last_review: r.last_review,
        }
    }
}

/// Accuracy on one skill (a tense or a trigger category).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SkillAccuracy {
    pub key: String,
    pub attempts: i32,
    pub correct: i32,
    /// correct / attempts, 0 to 1.
    pub accuracy: f64,
}

/// A learner's progress, read from aggregates (never from the attempt history).
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub attempts: i32,
    pub correct: i32,
    /// correct / attempts (0 with no attempts).
    pub accuracy: f64,
    /// Accuracy over the last answers (up to 20); null before the first. New
    /// practice is chosen at a difficulty that follows it.
    pub recent_accuracy: Option<f64>,
    pub xp: i64,
    pub level: Level,
    /// Consecutive days with practice up to today or yesterday, in the
    /// learner's time zone.
    pub current_streak: i32,
    pub longest_streak: i32,
    pub last_active_day: Option<NaiveDate>,
    pub by_tense: Vec<SkillAccuracy>,
    pub by_trigger: Vec<SkillAccuracy>,
    /// Up to three skills with the lowest accuracy (at least 3 attempts each).
    pub weakest: Vec<SkillAccuracy>,
}

#[derive(sqlx::FromRow)]
struct ProgressTotals {
    attempts: Option<i32>,
    correct: Option<i32>,
    xp: Option<i64>,
    current_streak: Option<i32>,
    longest_streak: Option<i32>,
    last_active_day: Option<NaiveDate>,
    recent_outcomes: Option<i32>,
    recent_count: Option<i16>,
    today: NaiveDate,
}

fn ratio(correct: i32, attempts: i32) -> f64 {
    if attempts == 0 {
        0.0
    } else {
        f64::from(correct) / f64::from(attempts)
    }
}

/// The caller's progress: totals, accuracy, streaks, accuracy per tense and
/// per trigger category, weakest areas, XP and level. Two queries on
/// aggregates, on a replica that has replayed the caller's latest attempt
/// (else on the primary).
#[utoipa::path(get, path = "/users/me/progress", tag = "practice",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's progress", body = Progress),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_progress(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let shard = state.db.user(user.id)?;
    let freshness = user_freshness(&state, &shard, user.id).await;
    let (progress, _) = load_progress(&user, &shard, freshness).await?;
    private_json(&progress)
}

/// The learner's progress and their recent outcomes, from their shard, read
/// as fresh as `freshness` asks ([`user_freshness`]: a replica that has
/// replayed their last attempt, else the primary).
pub async fn load_progress(
    user: &AuthUser,
    shard: &UserDb,
    freshness: Freshness,
) -> AppResult<(Progress, RecentOutcomes)> {
    let (user_id, timezone) = (user.id, user.timezone.as_ref());
    let (totals, skills) = shard
        .read_consistent(freshness, |pool| async move {
            // One row whether or not the learner has practised yet.
            let totals = sqlx::query_as::<_, ProgressTotals>(
                "SELECT p.attempts, p.correct, p.xp, p.current_streak, p.longest_streak,
                        p.last_active_day, p.recent_outcomes, p.recent_count,
                        (now() AT TIME ZONE $2)::date AS today
                   FROM (SELECT $1::uuid AS user_id) me
                   LEFT JOIN user_progress p ON p.user_id = me.user_id",
            )
            .bind(user_id)
            .bind(timezone)
            .fetch_optional(&pool)
            .await?;
            let skills: Vec<(String, String, i32, i32)> = sqlx::query_as(
                "SELECT dimension, key, attempts, correct FROM user_skill_stats
                  WHERE user_id = $1 ORDER BY dimension, key",
            )
            .bind(user_id)
            .fetch_all(&pool)
            .await?;
            Ok((totals, skills))
        })
        .await?;
    let totals =
        totals.ok_or_else(|| AppError::unauthenticated("This account no longer exists.", true))?;

    let mut by_tense = Vec::new();
    let mut by_trigger = Vec::new();
    for (dimension, key, attempts, correct) in skills {
        let skill = SkillAccuracy {
            key,
            attempts,
            correct,
            accuracy: ratio(correct, attempts),
        };
        if dimension == "tense" {
            by_tense.push(skill);
        } else {
            by_trigger.push(skill);
        }
    }
    let mut weakest: Vec<SkillAccuracy> = by_tense
        .iter()
        .chain(&by_trigger)
        .filter(|s| s.attempts >= 3)
        .cloned()
        .collect();
    weakest.sort_by(|a, b| {
        a.accuracy
            .total_cmp(&b.accuracy)
            .then(b.attempts.cmp(&a.attempts))
    });
    weakest.truncate(3);

    let attempts = totals.attempts.unwrap_or(0);
    let correct = totals.correct.unwrap_or(0);
    let xp = totals.xp.unwrap_or(0);
    let recent = RecentOutcomes::from_stored(
        totals.recent_outcomes.unwrap_or(0),
        totals.recent_count.unwrap_or(0),
    );
    // A streak is alive while the last active day is today or yesterday.
    let alive = totals
        .last_active_day
        .is_some_and(|day| day == totals.today || day.succ_opt() == Some(totals.today));
    let progress = Progress {
        attempts,
        correct,
        accuracy: ratio(correct, attempts),
        recent_accuracy: recent.accuracy(),
        xp,
        level: scheduling::level(xp),
        current_streak: if alive {
            totals.current_streak.unwrap_or(0)
        } else {
            0
        },
        longest_streak: totals.longest_streak.unwrap_or(0),
        last_active_day: totals.last_active_day,
        by_tense,
        by_trigger,
        weakest,
    };
    Ok((progress, recent))
}

pub fn private_json<T: Serialize>(value: &T) -> AppResult<Response> {
    let body = serde_json::to_vec(value).map_err(|e| AppError::Internal(e.into()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(PRIVATE)),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    /// How many items, 1 to 50 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 50)]
    pub limit: Option<String>,
}

/// One item to practise.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextItem {
    /// `review` (due for spaced repetition) or `new`.
    pub reason: String,
    /// For reviews, when it became due.
    pub due: Option<DateTime<Utc>>,
    pub exercise: crate::http::exercises::ExerciseView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NextItems {
    pub items: Vec<NextItem>,
    /// The difficulty new items were chosen around, from recent accuracy.
    pub target_difficulty: i16,
}

/// What to practise now: exercises due for review first (most overdue
/// first), then new ones from the learner's weakest tenses and triggers at a
/// difficulty that follows their recent accuracy.
#[utoipa::path(get, path = "/practice/next", tag = "practice",
    security(("bearer" = [])),
    params(NextQuery),
    responses(
        (status = 200, description = "Items to practise", body = NextItems),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `limit`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn next_items(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(query): AppQuery<NextQuery>,
) -> AppResult<Response> {
    let limit: i64 = match query.limit.as_deref() {
        None => 10,
        Some(raw) => bounded_int(raw, 1..=50)
            .ok_or_else(|| AppError::validation("limit", "must be an integer from 1 to 50"))?,
    };
    // Recent accuracy sets the difficulty; the weakest skills choose the content.
    let shard = state.db.user(user.id)?;
    let freshness = user_freshness(&state, &shard, user.id).await;
    let (progress, recent) = load_progress(&user, &shard, freshness).await?;
    let target = adaptive::target_difficulty(recent);
    let records: Vec<SkillRecord<'_>> = [
        (Dimension::Tense, &progress.by_tense),
        (Dimension::Trigger, &progress.by_trigger),
    ]
    .into_iter()
    .flat_map(|(dimension, skills)| {
        skills.iter().map(move |s| SkillRecord {
            dimension,
            key: &s.key,
            attempts: s.attempts,
            correct: s.correct,
        })
    })
    .collect();
    let focus = adaptive::focus(&records);
    // The learner's settings: the tenses they practise (applied to the types
    // that show their tense; choice types are kept whole, since selecting them
    // by the tense of their right answer would give it away) and how many new
    // items a day.
    let tenses = user.settings.tense_keys();
    let shows_tense: Vec<&str> = ExerciseType::ALL
        .into_iter()
        .filter(|k| k.is_free_text())
        .map(ExerciseType::key)
        .collect();
    let settings = user.settings.clone();
    let timezone = user.timezone.clone();
    let (due, fresh) = shard
        .read_consistent(freshness, |pool| {
            let (focus, tenses, shows_tense) = (focus.clone(), tenses.clone(), shows_tense.clone());
            let (settings, timezone) = (settings.clone(), timezone.clone());
            async move {
                let due: Vec<DueRow> = sqlx::query_as(
                    "SELECT c.due, e.id, e.slug, e.kind, e.prompt, e.instructions, e.infinitive,
                            e.person, e.tense, e.trigger, e.difficulty, e.tags, e.choices
                       FROM review_cards c JOIN exercises e ON e.id = c.exercise_id
                      WHERE c.user_id = $1 AND c.due <= now() AND c.suspended_at IS NULL
                        AND ($3::text[] IS NULL OR e.kind <> ALL($4) OR e.tense = ANY($3))
                      ORDER BY c.due
                      LIMIT $2",
                )
                .bind(user.id)
                .bind(limit)
                .bind(&tenses)
                .bind(&shows_tense)
                .fetch_all(&pool)
                .await?;
                let mut remaining = limit - i64::try_from(due.len()).unwrap_or(limit);
                if remaining <= 0 {
                    return Ok((due, Vec::new()));
                }
                // New items met today, in the learner's day.
                let introduced: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM attempts
                      WHERE user_id = $1 AND was_review = false
                        AND created_at >= ((now() AT TIME ZONE $2)::date::timestamp AT TIME ZONE $2)
                        AND created_at < now() + interval '1 day'",
                )
                .bind(user.id)
                .bind(timezone.as_ref())
                .fetch_one(&pool)
                .await?;
                remaining = remaining.min(settings.new_items_left(introduced));
                if remaining <= 0 {
                    return Ok((due, Vec::new()));
                }
                // New items: never seen by this learner, near the target
                // difficulty, from the weakest skill first ($3 lists
                // `dimension:key`, weakest first; an exercise ranks by the
                // weaker of its tense and trigger, a skill not listed last);
                // the hash varies the order per learner without a random sort.
                let fresh: Vec<ExerciseRow> = sqlx::query_as(
                    "SELECT e.id, e.slug, e.kind, e.prompt, e.instructions, e.infinitive, e.person,
                            e.tense, e.trigger, e.difficulty, e.tags, e.choices
                       FROM exercises e
                      WHERE e.difficulty BETWEEN $2 - 1 AND $2 + 1
                        AND ($5::text[] IS NULL OR e.kind <> ALL($6) OR e.tense = ANY($5))
                        AND NOT EXISTS (SELECT 1 FROM review_cards c
                                         WHERE c.user_id = $1 AND c.exercise_id = e.id)
                      ORDER BY least(coalesce(array_position($3, 'tense:' || e.tense), 2147483647),
                                     coalesce(array_position($3, 'trigger:' || e.trigger), 2147483647)),
                               abs(e.difficulty - $2),
                               hashtext(e.slug || $1::text)
                      LIMIT $4",
                )
                .bind(user.id)
                .bind(target)
                .bind(&focus)
                .bind(remaining)
                .bind(&tenses)
                .bind(&shows_tense)
                .fetch_all(&pool)
                .await?;
                Ok((due, fresh))
            }
        })
        .await?;
    let items = due
        .into_iter()
        .map(|row| NextItem {
            reason: "review".into(),
            due: Some(row.due),
            exercise: row.exercise.into(),
        })
        .chain(fresh.into_iter().map(|row| NextItem {
            reason: "new".into(),
            due: None,
            exercise: row.into(),
        }))
        .collect();
    private_json(&NextItems {
        items,
        target_difficulty: target,
    })
}

use crate::http::exercises::ExerciseRow;

#[derive(sqlx::FromRow)]
struct DueRow {
    due: DateTime<Utc>,
    #[sqlx(flatten)]
    exercise: ExerciseRow,
}

/// One recent attempt with a summary of its exercise.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RecentAttempt {
    pub attempt_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// `correct`, `accent_mismatch` or `incorrect`.
    pub result: String,
    pub counts_as_correct: bool,
    pub error_category: Option<String>,
    pub answer: String,
    pub xp: i32,
    pub exercise_id: i64,
    #[serde(rename = "exercise_type")]
    #[schema(rename = "exercise_type")]
    pub kind: String,
    pub prompt: String,
    pub verb: String,
    pub difficulty: i16,
}

/// Everything a learner's home screen shows, in one request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub profile: crate::http::users::UserProfile,
    pub progress: Progress,
    /// The 10 most recent attempts, newest first.
    pub recent_attempts: Vec<RecentAttempt>,
}

/// The dashboard's recent history: the 10 newest attempts of learner `$1`
/// with their exercises, in one statement.
///
/// `attempts` is partitioned by quarter, and an unbounded "newest ten" would
/// open every partition the learner ever wrote to. So the first branch reads
/// only the last 30 days (up to a day ahead, for clock skew between
/// the nodes): Postgres prunes that to at most two quarters when the executor
/// starts (`now()` is stable). Only when that window holds fewer than ten
/// attempts does the second branch look further back (a one-time filter on
/// the first branch's count, so otherwise it never runs). In each partition
/// the primary key `(user_id, created_at, id)` is read backwards and the merge
/// stops after ten rows. `tests/it/practice.rs` runs this very constant under
/// `EXPLAIN ANALYZE`.
pub const RECENT_ATTEMPTS_SQL: &str = "
WITH recent AS MATERIALIZED (
    SELECT a.id, a.created_at, a.outcome, a.counts_as_correct, a.error_category, a.answer,
           a.xp, a.exercise_id
      FROM attempts a
     WHERE a.user_id = $1
       AND a.created_at >= now() - interval '30 days'
       AND a.created_at < now() + interval '1 day'
     ORDER BY a.created_at DESC, a.id DESC
     LIMIT 10
), older AS (
    SELECT a.id, a.created_at, a.outcome, a.counts_as_correct, a.error_category, a.answer,
           a.xp, a.exercise_id
      FROM attempts a
     WHERE a.user_id = $1
       AND a.created_at < now() - interval '30 days'
       AND (SELECT count(*) FROM recent) < 10
     ORDER BY a.created_at DESC, a.id DESC
     LIMIT 10
)
SELECT h.id AS attempt_id, h.created_at, h.outcome AS result, h.counts_as_correct,
       h.error_category, h.answer, h.xp, h.exercise_id,
       e.kind, e.prompt, e.infinitive AS verb, e.difficulty
  FROM (SELECT * FROM recent UNION ALL SELECT * FROM older) h
  JOIN exercises e ON e.id = h.exercise_id
 ORDER BY h.created_at DESC, h.id DESC
 LIMIT 10";

/// The caller's profile, progress and 10 most recent attempts with their
/// exercises: four queries whatever the history (a join, not a query per
/// attempt), on a replica that has replayed the caller's latest attempt
/// (else on the primary).
#[utoipa::path(get, path = "/users/me/dashboard", tag = "practice",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's dashboard", body = Dashboard),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_dashboard(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let shard = state.db.user(user.id)?;
    let freshness = user_freshness(&state, &shard, user.id).await;
    let (progress, _) = load_progress(&user, &shard, freshness).await?;
    // The account is on main; the history on the learner's shard. Without
    // sharding both are one database and one consistency token.
    let main_freshness = if shard.is_sharded() {
        state.write_tokens.freshness(user.id).await
    } else {
        freshness
    };
    let profile = state
        .db
        .read_consistent(main_freshness, |pool| async move {
            sqlx::query_as::<_, crate::auth::store::UserRow>(
                "SELECT id, email, password_hash, display_name, role, timezone, is_active,
                        created_at
                   FROM users WHERE id = $1",
            )
            .bind(user.id)
            .fetch_optional(&pool)
            .await
        })
        .await?;
    let recent_attempts = shard
        .read_consistent(freshness, |pool| async move {
            sqlx::query_as::<_, RecentAttempt>(RECENT_ATTEMPTS_SQL)
                .bind(user.id)
                .fetch_all(&pool)
                .await
        })
        .await?;
    let profile = profile
        .filter(|u| u.is_active)
        .ok_or_else(|| AppError::unauthenticated("This account no longer exists.", true))?;
    private_json(&Dashboard {
        profile: profile.into(),
        progress,
        recent_attempts,
    })
}
