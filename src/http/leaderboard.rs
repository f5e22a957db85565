//! `GET /api/v1/leaderboard`: weekly and all-time XP rankings with the
//! caller's own rank (Redis sorted sets, rebuilt from Postgres when lost),
//! and the caller's weekly league (src/leagues.rs).

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
use crate::leagues::{self, LastWeek, League, Outcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_leaderboard))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardQuery {
    /// `weekly` (ISO week, UTC; the default), `all_time`, or `league`: the
    /// caller's cohort of at most 30 in their tier this week (every member;
    /// `limit` does not apply).
    #[param(value_type = Option<String>, pattern = "^(weekly|all_time|league)$")]
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
    /// In a league: where this rank would end the week (`promoted`,
    /// `stayed`, `demoted`); null on the other boards.
    pub zone: Option<Outcome>,
}

/// Which board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BoardPeriod {
    Weekly,
    AllTime,
    League,
}

impl From<Period> for BoardPeriod {
    fn from(period: Period) -> Self {
        match period {
            Period::Weekly => BoardPeriod::Weekly,
            Period::AllTime => BoardPeriod::AllTime,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyRank {
    pub rank: i64,
    pub xp: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardView {
    pub period: BoardPeriod,
    pub items: Vec<Leader>,
    /// The caller's own place; null before they earn XP in the period.
    pub me: Option<MyRank>,
    /// With `period=league`: the caller's league this week; null before
    /// they earn XP this week (and in the reset's first minute, while the
    /// week's leagues are formed) and on the other boards.
    pub league: Option<League>,
    /// With `period=league`: how the caller's previous week ended.
    pub last_week: Option<LastWeek>,
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
        None => Some(BoardPeriod::Weekly),
        Some("league") => Some(BoardPeriod::League),
        Some(raw) => Period::from_key(raw).map(BoardPeriod::from),
    };
    if period.is_none() {
        errors.push(FieldError::new(
            "period",
            "must be weekly, all_time or league",
        ));
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
    let period = match period {
        BoardPeriod::League => return league(&state, &user).await,
        BoardPeriod::Weekly => Period::Weekly,
        BoardPeriod::AllTime => Period::AllTime,
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
    // An entry without an account is a deleted one the board still held (an
    // attempt or a rebuild that read Postgres before the deletion): not
    // shown, and taken off the board.
    let gone: Vec<Uuid> = ids
        .iter()
        .filter(|id| !names.iter().any(|(n, _)| n == *id))
        .copied()
        .collect();
    state.leaderboard.forget(period, &gone).await;
    let items = top
        .into_iter()
        .filter_map(|(user_id, xp)| {
            let (_, name) = names.iter().find(|(id, _)| *id == user_id)?;
            Some((user_id, name.clone(), xp))
        })
        .zip(1..)
        .map(|((user_id, display_name, xp), rank)| Leader {
            rank,
            user_id,
            display_name,
            xp,
            zone: None,
        })
        .collect();
    private_json(&LeaderboardView {
        period: period.into(),
        items,
        me: me.map(|(rank, xp)| MyRank { rank, xp }),
        league: None,
        last_week: None,
    })
}

async fn league(state: &AppState, user: &AuthUser) -> AppResult<Response> {
    let now = chrono::Utc::now();
    let shard = state.db.user(user.id)?;
    let week_xp: Option<i64> =
        sqlx::query_scalar("SELECT xp FROM user_weekly_xp WHERE user_id = $1 AND week = $2")
            .bind(user.id)
            .bind(crate::leaderboard::week_bounds(now).0)
            .fetch_optional(shard.write())
            .await?;
    let standing = leagues::standing(&state.db, user.id, week_xp.unwrap_or(0), now).await?;
    let Some(standing) = standing else {
        return private_json(&LeaderboardView {
            period: BoardPeriod::League,
            items: Vec::new(),
            me: None,
            league: None,
            last_week: None,
        });
    };
    private_json(&LeaderboardView {
        period: BoardPeriod::League,
        items: standing
            .members
            .into_iter()
            .map(|m| Leader {
                rank: i64::from(m.rank),
                user_id: m.user_id,
                display_name: m.display_name,
                xp: m.xp,
                zone: Some(m.zone),
            })
            .collect(),
        me: standing.me.map(|(rank, xp)| MyRank {
            rank: i64::from(rank),
            xp,
        }),
        league: Some(standing.league),
        last_week: standing.last_week,
    })
}
