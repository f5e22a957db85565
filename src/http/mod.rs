//! HTTP layer: one module per resource, plus the shared middleware and extractors.
//! Handlers stay thin: parse, authorize, call the data/domain layer, shape the response.

pub mod achievements;
pub mod admin;
pub mod answers;
pub mod auth;
pub mod ballot;
pub mod caching;
pub mod cities;
pub mod exercises;
pub mod export;
pub mod extract;
pub mod fast_path;
pub mod idempotency;
pub mod leaderboard;
pub mod leeches;
pub mod limits;
pub mod live;
pub mod moderation;
pub mod moderation_queue;
pub mod observe;
pub mod operations;
pub mod pagination;
pub mod practice;
pub mod problems;
pub mod questions;
pub mod rebuttals;
pub mod review_stats;
pub mod settings;
pub mod users;
pub mod verbs;
pub mod videos;

use axum::http::Uri;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::error::AppError;

/// Routes under `/api/v1`.
pub fn api_v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(users::router())
        .merge(admin::router())
        .merge(cities::router())
        .merge(verbs::router())
        .merge(exercises::router())
        .merge(practice::router())
        .merge(review_stats::router())
        .merge(settings::router())
        .merge(leeches::router())
        .merge(achievements::router())
        .merge(export::router())
        .merge(leaderboard::router())
        .merge(questions::router())
        .merge(moderation::router())
        .merge(moderation_queue::router())
        .merge(answers::router())
        .merge(ballot::router())
        .merge(rebuttals::router())
        .merge(videos::router())
        .merge(live::router())
}

/// Unknown paths get a problem document, not an empty 404.
pub async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(format!("No route for {}", uri.path()))
}
