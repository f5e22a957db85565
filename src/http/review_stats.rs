//! Review statistics: what is due, how well reviews go, and a day-by-day
//! history for a chart (`GET /users/me/reviews/stats`).
//!
//! Everything comes from the learner's shard in two statements: the review
//! cards (one index range of the learner's cards) and the attempts of the
//! window (partition-pruned to it), grouped by the learner's own days.

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::AppQuery;
use crate::http::pagination::bounded_int;
use crate::http::practice::{private_json, user_freshness};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(review_stats))
}

const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 365;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Days of history and of the retention window, ending today (in the
    /// learner's time zone): 1 to 365, default 30.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 365)]
    pub days: Option<String>,
}

/// The learner's review cards by scheduler state.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CardCounts {
    pub total: i64,
    /// Never reviewed yet (FSRS state 0).
    pub new: i64,
    pub learning: i64,
    pub review: i64,
    pub relearning: i64,
    /// Suspended as leeches (not due, whatever their schedule says).
    pub leeches: i64,
}

/// Cards due, by when.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DueCounts {
    /// Due already.
    pub now: i64,
    /// Due before the learner's midnight.
    pub today: i64,
    /// Due before the end of the 7th day from today.
    pub this_week: i64,
}

/// How reviews went in the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retention {
    pub days: i64,
    /// Attempts on items the learner had practised before.
    pub reviews: i64,
    /// Of those, the ones that counted as correct.
    pub correct: i64,
    /// `correct / reviews`; null without reviews.
    pub rate: Option<f64>,
}

/// One day of the learner's practice (in their time zone).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DayStats {
    pub day: NaiveDate,
    pub attempts: i64,
    pub correct: i64,
    /// First attempts on items new to the learner.
    pub new_items: i64,
    /// Attempts on items seen before.
    pub reviews: i64,
    pub reviews_correct: i64,
    pub xp: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewStats {
    /// The learner's time zone, which days are counted in.
    pub timezone: String,
    pub today: NaiveDate,
    pub cards: CardCounts,
    pub due: DueCounts,
    pub retention: Retention,
    /// Every day of the window, oldest first, days without practice included.
    pub history: Vec<DayStats>,
}

#[derive(sqlx::FromRow)]
struct CardRow {
    #[sqlx(flatten)]
    cards: CardCounts,
    #[sqlx(flatten)]
    due: DueCounts,
    local_today: NaiveDate,
}

/// The caller's review statistics: cards by state, cards due now, today and
/// this week, retention over the window and a per-day history (attempts,
/// correct, new items, reviews, XP). Days are the learner's own (their time
/// zone). Attempts written before reviews were recorded as such count as
/// attempts but as neither new items nor reviews.
#[utoipa::path(get, path = "/users/me/reviews/stats", tag = "practice",
    security(("bearer" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "The caller's review statistics", body = ReviewStats),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `days`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn review_stats(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(query): AppQuery<StatsQuery>,
) -> AppResult<Response> {
    let days = match query.days.as_deref() {
        None => DEFAULT_DAYS,
        Some(raw) => bounded_int(raw, 1..=MAX_DAYS)
            .ok_or_else(|| AppError::validation("days", "must be an integer from 1 to 365"))?,
    };
    let shard = state.db.user(user.id)?;
    let freshness = user_freshness(&state, &shard, user.id).await;
    let (user_id, timezone) = (user.id, user.timezone.as_ref());
    let (cards, history) = shard
        .read_consistent(freshness, |pool| async move {
            // Local midnights as instants: today's start, tomorrow's, and the
            // one 7 days on.
            let cards = sqlx::query_as::<_, CardRow>(
                "WITH bounds AS (
                     SELECT (now() AT TIME ZONE $2)::date AS today)
                 SELECT count(c.*) AS total,
                        count(*) FILTER (WHERE c.state = 0) AS new,
                        count(*) FILTER (WHERE c.state = 1) AS learning,
                        count(*) FILTER (WHERE c.state = 2) AS review,
                        count(*) FILTER (WHERE c.state = 3) AS relearning,
                        count(*) FILTER (WHERE c.suspended_at IS NOT NULL) AS leeches,
                        count(*) FILTER (WHERE c.suspended_at IS NULL AND c.due <= now()) AS now,
                        count(*) FILTER (WHERE c.suspended_at IS NULL
                                           AND c.due < ((b.today + 1)::timestamp AT TIME ZONE $2)) AS today,
                        count(*) FILTER (WHERE c.suspended_at IS NULL
                                           AND c.due < ((b.today + 7)::timestamp AT TIME ZONE $2)) AS this_week,
                        b.today AS local_today
                   FROM bounds b
                   LEFT JOIN review_cards c ON c.user_id = $1
                  GROUP BY b.today",
            )
            .bind(user_id)
            .bind(timezone)
            .fetch_one(&pool)
            .await?;
            // The window's attempts (pruned to its partitions), by local day,
            // every day of the window present.
            let history = sqlx::query_as::<_, DayStats>(
                "WITH bounds AS (
                     SELECT (now() AT TIME ZONE $2)::date AS today),
                 days AS (
                     SELECT d::date AS day
                       FROM bounds b,
                            generate_series(b.today - ($3::int - 1), b.today, interval '1 day') AS d),
                 window_attempts AS (
                     SELECT (a.created_at AT TIME ZONE $2)::date AS day, a.counts_as_correct,
                            a.was_review, a.xp
                       FROM attempts a, bounds b
                      WHERE a.user_id = $1
                        AND a.created_at >= ((b.today - ($3::int - 1))::timestamp AT TIME ZONE $2)
                        AND a.created_at < ((b.today + 1)::timestamp AT TIME ZONE $2))
                 SELECT d.day,
                        count(w.day) AS attempts,
                        count(*) FILTER (WHERE w.counts_as_correct) AS correct,
                        count(*) FILTER (WHERE w.was_review = false) AS new_items,
                        count(*) FILTER (WHERE w.was_review) AS reviews,
                        count(*) FILTER (WHERE w.was_review AND w.counts_as_correct) AS reviews_correct,
                        coalesce(sum(w.xp), 0)::bigint AS xp
                   FROM days d
                   LEFT JOIN window_attempts w ON w.day = d.day
                  GROUP BY d.day
                  ORDER BY d.day",
            )
            .bind(user_id)
            .bind(timezone)
            .bind(i32::try_from(days).unwrap_or(30))
            .fetch_all(&pool)
            .await?;
            Ok((cards, history))
        })
        .await?;
    let reviews: i64 = history.iter().map(|d| d.reviews).sum();
    let correct: i64 = history.iter().map(|d| d.reviews_correct).sum();
    #[allow(clippy::cast_precision_loss)]
    let rate = (reviews > 0).then(|| correct as f64 / reviews as f64);
    private_json(&ReviewStats {
        timezone: timezone.to_owned(),
        today: cards.local_today,
        cards: cards.cards,
        due: cards.due,
        retention: Retention {
            days,
            reviews,
            correct,
            rate,
        },
        history,
    })
}
