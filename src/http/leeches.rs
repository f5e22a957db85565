//! Leeches: items a learner answered wrong 8 times, suspended from review
//! (`scheduling::LEECH_FAILURES`). `GET /users/me/leeches` lists them, newest
//! first; `DELETE /users/me/leeches/{exercise_id}` brings one back (due now,
//! its wrong answers forgiven).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, Problem};
use crate::http::exercises::{ExerciseRow, ExerciseView};
use crate::http::extract::{AppPath, AppQuery};
use crate::http::pagination::{PageQuery, finish_page};
use crate::http::practice::{private_json, remember_user_write, user_freshness};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_leeches))
        .routes(routes!(restore_leech))
}

/// One suspended item.
#[derive(Debug, Serialize, ToSchema)]
pub struct Leech {
    pub exercise: ExerciseView,
    /// Wrong answers so far.
    pub failures: i32,
    pub suspended_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeechPage {
    pub items: Vec<Leech>,
    pub next_cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LeechRow {
    failures: i32,
    suspended_at: DateTime<Utc>,
    #[sqlx(flatten)]
    exercise: ExerciseRow,
}

/// The caller's leeches, newest first (keyset pages: `limit` 1-100, default
/// 20, and the previous page's `next_cursor`).
#[utoipa::path(get, path = "/users/me/leeches", tag = "practice",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "Suspended items", body = LeechPage),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_leeches(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(page_query): AppQuery<PageQuery>,
) -> AppResult<Response> {
    let page = page_query.parse::<(DateTime<Utc>, i64)>()?;
    let shard = state.db.user(user.id)?;
    let freshness = user_freshness(&state, &shard, user.id).await;
    let (limit, after) = (page.limit, page.after);
    let rows = shard
        .read_consistent(freshness, |pool| async move {
            sqlx::query_as::<_, LeechRow>(
                "SELECT c.failures, c.suspended_at, e.id, e.slug, e.kind, e.prompt, e.instructions,
                        e.infinitive, e.person, e.tense, e.trigger, e.difficulty, e.tags, e.choices
                   FROM review_cards c JOIN exercises e ON e.id = c.exercise_id
                  WHERE c.user_id = $1 AND c.suspended_at IS NOT NULL
                    AND ($2::timestamptz IS NULL OR (c.suspended_at, c.exercise_id) < ($2, $3))
                  ORDER BY c.suspended_at DESC, c.exercise_id DESC
                  LIMIT $4",
            )
            .bind(user.id)
            .bind(after.map(|(at, _)| at))
            .bind(after.map_or(0, |(_, id)| id))
            .bind(limit + 1)
            .fetch_all(&pool)
            .await
        })
        .await?;
    let (rows, next_cursor) = finish_page(rows, limit, |r| (r.suspended_at, r.exercise.id()));
    private_json(&LeechPage {
        items: rows
            .into_iter()
            .map(|r| Leech {
                failures: r.failures,
                suspended_at: r.suspended_at,
                exercise: r.exercise.into(),
            })
            .collect(),
        next_cursor,
    })
}

/// Brings a leech back into review: due now, its wrong answers forgiven.
#[utoipa::path(delete, path = "/users/me/leeches/{exercise_id}", tag = "practice",
    security(("bearer" = [])),
    params(("exercise_id" = i64, Path, description = "The suspended exercise", minimum = 1)),
    responses(
        (status = 204, description = "Back in review"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not one of the caller's leeches", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn restore_leech(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(exercise_id): AppPath<i64>,
) -> AppResult<Response> {
    let shard = state.db.user(user.id)?;
    let mut tx = shard.write().begin().await?;
    shard.enter(&mut tx, user.id).await?;
    let restored = sqlx::query(
        "UPDATE review_cards SET suspended_at = NULL, failures = 0, due = now()
          WHERE user_id = $1 AND exercise_id = $2 AND suspended_at IS NOT NULL",
    )
    .bind(user.id)
    .bind(exercise_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if restored == 0 {
        return Err(AppError::NotFound(format!(
            "Exercise {exercise_id} is not one of your leeches"
        )));
    }
    remember_user_write(&state, &shard, user.id).await;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}
