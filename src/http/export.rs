//! `GET /users/me/export`: everything the service keeps about a learner's
//! account and practice, as one JSON document they can download.
//!
//! The head (profile, settings, progress, review cards, weekly XP) is small
//! and built at once; the attempts, which grow without bound, are streamed
//! from the learner's shard in keyset pages of [`PAGE`], so memory stays flat
//! whatever the history. Pages are read from the shard's primary in
//! (created_at, id) order: an attempt recorded while the export runs is
//! either in it or not, never twice.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, Problem};
use crate::http::limits::spend_user_limit;
use crate::http::practice::{Progress, load_progress, user_freshness};
use crate::http::settings::Settings;
use crate::http::users::UserProfile;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export))
}

/// Attempts per page of the stream.
const PAGE: i64 = 1000;

/// One review card as the scheduler keeps it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ExportedCard {
    pub exercise_id: i64,
    pub due: DateTime<Utc>,
    pub stability: f64,
    pub difficulty: f64,
    pub reps: i32,
    pub lapses: i32,
    /// 0 new, 1 learning, 2 review, 3 relearning.
    pub state: i16,
    pub last_review: DateTime<Utc>,
    pub failures: i32,
    pub suspended_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ExportedWeek {
    /// The week's Monday (ISO weeks, UTC).
    pub week: NaiveDate,
    pub xp: i64,
}

/// An achievement earned.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ExportedAchievement {
    pub id: String,
    pub earned_at: DateTime<Utc>,
}

/// One attempt, as recorded.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ExportedAttempt {
    pub attempt_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub exercise_id: i64,
    pub answer: String,
    pub result: String,
    pub counts_as_correct: bool,
    pub error_category: Option<String>,
    pub duration_ms: Option<i32>,
    pub xp: i32,
    /// Null for attempts recorded before reviews were told apart.
    pub was_review: Option<bool>,
}

/// The document (for the OpenAPI description; the response is streamed in
/// this shape, attempts oldest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    pub exported_at: DateTime<Utc>,
    pub profile: UserProfile,
    pub settings: Settings,
    pub progress: Progress,
    pub review_cards: Vec<ExportedCard>,
    pub weekly_xp: Vec<ExportedWeek>,
    pub achievements: Vec<ExportedAchievement>,
    pub attempts: Vec<ExportedAttempt>,
}

/// Everything but the attempts, serialized first.
#[derive(Serialize)]
struct Head<'a> {
    exported_at: DateTime<Utc>,
    profile: &'a UserProfile,
    settings: &'a Settings,
    progress: &'a Progress,
    review_cards: &'a [ExportedCard],
    weekly_xp: &'a [ExportedWeek],
    achievements: &'a [ExportedAchievement],
}

/// The caller's data: profile, practice settings, progress, review cards,
/// weekly XP, achievements and every attempt (oldest first), as a JSON attachment.
/// Limited per learner (`RATE_LIMIT_EXPORTS_USER`).
#[utoipa::path(get, path = "/users/me/export", tag = "practice",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's data", body = Export),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many exports (RATE_LIMIT_EXPORTS_USER); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    spend_user_limit(
        &state,
        user.id,
        "exports-user",
        state.config.practice.exports_per_user,
    )
    .await?;
    let profile = crate::auth::store::find_by_id(state.db.read_fresh(), user.id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(|| AppError::unauthenticated("This account no longer exists.", true))?;
    let shard = state.db.user(user.id)?;
    let freshness = user_freshness(&state, &shard, user.id).await;
    let (progress, _) = load_progress(&user, &shard, freshness).await?;
    let pool = shard.read_fresh().clone();
    let review_cards = sqlx::query_as::<_, ExportedCard>(
        "SELECT exercise_id, due, stability, difficulty, reps, lapses, state, last_review,
                failures, suspended_at
           FROM review_cards WHERE user_id = $1 ORDER BY exercise_id",
    )
    .bind(user.id)
    .fetch_all(&pool)
    .await?;
    let weekly_xp = sqlx::query_as::<_, ExportedWeek>(
        "SELECT week, xp FROM user_weekly_xp WHERE user_id = $1 ORDER BY week",
    )
    .bind(user.id)
    .fetch_all(&pool)
    .await?;
    let achievements = sqlx::query_as::<_, ExportedAchievement>(
        "SELECT achievement AS id, earned_at FROM user_achievements
          WHERE user_id = $1 ORDER BY earned_at, achievement",
    )
    .bind(user.id)
    .fetch_all(&pool)
    .await?;
    let head = serde_json::to_vec(&Head {
        exported_at: Utc::now(),
        profile: &UserProfile::from(profile),
        settings: &Settings::from(user.settings.as_ref()),
        progress: &progress,
        review_cards: &review_cards,
        weekly_xp: &weekly_xp,
        achievements: &achievements,
    })
    .map_err(|e| AppError::Internal(e.into()))?;
    // `{...head...}` becomes `{...head..., "attempts": [` + pages + `]}`.
    let mut opening = head;
    opening.pop();
    opening.extend_from_slice(br#","attempts":["#);

    let start = Stream {
        pool,
        user: user.id,
        after: None,
        first: true,
        phase: Phase::Opening(Bytes::from(opening)),
    };
    // Fused: the compression layer polls once more after the end, which an
    // unfold stream answers with a panic.
    let body = Body::from_stream(futures_util::StreamExt::fuse(futures_util::stream::unfold(
        start, next_chunk,
    )));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"refbackend-export.json\""),
    );
    Ok(response)
}

enum Phase {
    Opening(Bytes),
    Attempts,
    Done,
}

struct Stream {
    pool: PgPool,
    user: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    /// No attempt written yet (no comma before the next one).
    first: bool,
    phase: Phase,
}

/// The next piece of the document: the head, then a page of attempts at a
/// time, then the closing brackets. A database error ends the stream early
/// (the client sees a truncated document and an aborted transfer).
async fn next_chunk(mut s: Stream) -> Option<(Result<Bytes, std::io::Error>, Stream)> {
    match std::mem::replace(&mut s.phase, Phase::Attempts) {
        Phase::Opening(bytes) => return Some((Ok(bytes), s)),
        Phase::Done => return None,
        Phase::Attempts => {}
    }
    let rows = sqlx::query_as::<_, ExportedAttempt>(
        "SELECT id AS attempt_id, created_at, exercise_id, answer, outcome AS result,
                counts_as_correct, error_category, duration_ms, xp, was_review
           FROM attempts
          WHERE user_id = $1
            AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
          ORDER BY created_at, id
          LIMIT $4",
    )
    .bind(s.user)
    .bind(s.after.map(|(at, _)| at))
    .bind(s.after.map_or(Uuid::nil(), |(_, id)| id))
    .bind(PAGE)
    .fetch_all(&s.pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, user = %s.user, "export stream failed");
            s.phase = Phase::Done;
            return Some((Err(std::io::Error::other(e)), s));
        }
    };
    let mut chunk = Vec::with_capacity(rows.len() * 200 + 2);
    for row in &rows {
        if !s.first {
            chunk.push(b',');
        }
        s.first = false;
        if let Err(e) = serde_json::to_writer(&mut chunk, row) {
            s.phase = Phase::Done;
            return Some((Err(std::io::Error::other(e)), s));
        }
    }
    if i64::try_from(rows.len()).unwrap_or(i64::MAX) < PAGE {
        chunk.extend_from_slice(b"]}");
        s.phase = Phase::Done;
    } else if let Some(last) = rows.last() {
        s.after = Some((last.created_at, last.attempt_id));
    }
    Some((Ok(Bytes::from(chunk)), s))
}
