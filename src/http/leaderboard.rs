//! `GET /api/v1/leaderboard`: weekly and all-time XP rankings with the
//! caller's own rank (Redis sorted sets, rebuilt from Postgres when lost).

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::AppQuery;
use crate::http::pagination::bounded_int;
use crate::http::practice::private_json;
use crate::leaderboard::Period;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_leaderboard))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardQuery {
    /// `weekly` (ISO week, UTC; the default) or `all_time`.
    #[param(value_type = Option<String>, pattern = "^(weekly|all_time)$")]
    pub period: Option<String>,
    /// How many leaders, 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Leader {
    /// 1 for the best.
    pub rank: i64,
    pub user_id: Uuid,
    pub display_name: String,
    pub xp: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyRank {
    pub rank: i64,
    pub xp: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardView {
    pub period: Period,
    pub items: Vec<Leader>,
    /// The caller's own place; null before they earn XP in the period.
    pub me: Option<MyRank>,
}

/// The best learners by XP this week or of all time, and the caller's rank.
#[utoipa::path(get, path = "/leaderboard", tag = "practice",
    security(("bearer" = [])),
    params(LeaderboardQuery),
    responses(
        (status = 200, description = "The leaderboard", body = LeaderboardView),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `period` or `limit`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_leaderboard(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(query): AppQuery<LeaderboardQuery>,
) -> AppResult<Response> {
    let mut errors = Vec::new();
    let period = match query.period.as_deref() {
        None => Some(Period::Weekly),
        Some(raw) => Period::from_key(raw),
    };
    if period.is_none() {
        errors.push(FieldError::new("period", "must be weekly or all_time"));
    }
    let limit = match query.limit.as_deref() {
        None => Some(10),
        Some(raw) => bounded_int(raw, 1..=100),
    };
    if limit.is_none() {
        errors.push(FieldError::new("limit", "must be an integer from 1 to 100"));
    }
    let (Some(period), Some(limit)) = (period, limit) else {
        return Err(AppError::Validation(errors));
    };
    let pool = state.db.write();
    let shards: Vec<sqlx::PgPool> = state
        .db
        .per_user_dbs()
        .iter()
        .map(|db| db.write().clone())
        .collect();
    let (top, me) = state
        .leaderboard
        .read(&shards, period, user.id, limit)
        .await?;
    let ids: Vec<Uuid> = top.iter().map(|(id, _)| *id).collect();
    // One query for every name on the page.
    let names: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, display_name FROM users WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    let items = top
        .into_iter()
        .zip(1..)
        .map(|((user_id, xp), rank)| Leader {
            rank,
            user_id,
            display_name: names
                .iter()
                .find(|(id, _)| *id == user_id)
                .map(|(_, name)| name.clone())
                .unwrap_or_default(),
            xp,
        })
        .collect();
    private_json(&LeaderboardView {
        period,
        items,
        me: me.map(|(rank, xp)| MyRank { rank, xp }),
    })
}
