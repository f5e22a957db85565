//! What moderators read (role moderator or admin, checked here):
//!
//! - `GET /moderation/questions?status=`: the queue — `hidden` (the default:
//!   hidden by flags, awaiting a decision), `flagged` (visible, with flags
//!   below the threshold), `removed` or `merged` — newest first, with each
//!   question's flag count and latest flag reasons;
//! - `GET /moderation/log`: the audit log (`moderation_log`), newest first,
//!   optionally for one question.
//!
//! Both page by keyset and read with the moderator's consistency token, so a
//! decision just taken is reflected at once.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AuthUser, Role};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::AppQuery;
use crate::http::pagination::{PageQuery, PageRequest, finish_page};
use crate::http::practice::private_json;
use crate::http::questions::{QuestionView, VIEW_COLUMNS};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(moderation_queue))
        .routes(routes!(moderation_log))
}

/// The queues a moderator can look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    Hidden,
    Flagged,
    Removed,
    Merged,
}

impl Queue {
    fn parse(raw: Option<&str>) -> Option<Queue> {
        match raw {
            None | Some("hidden") => Some(Queue::Hidden),
            Some("flagged") => Some(Queue::Flagged),
            Some("removed") => Some(Queue::Removed),
            Some("merged") => Some(Queue::Merged),
            Some(_) => None,
        }
    }

    /// The queue's condition, with its status as a literal so that the
    /// planner can use the partial indexes of migration 0009.
    const fn predicate(self) -> &'static str {
        match self {
            Queue::Hidden => "q.status = 'hidden'",
            Queue::Flagged => "q.status = 'visible' AND q.flag_count > 0",
            Queue::Removed => "q.status = 'removed'",
            Queue::Merged => "q.status = 'merged'",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// `hidden` (the default: hidden by flags, awaiting a decision),
    /// `flagged` (visible, flagged below the threshold), `removed` or `merged`.
    #[param(value_type = Option<String>, pattern = "^(hidden|flagged|removed|merged)$")]
    pub status: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (of the same status).
    /// Opaque: only a value this list returned is valid.
    #[param(max_length = 512, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// A question in a moderation queue.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct QueueItem {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub question: QuestionView,
    /// Distinct users who flagged it (reset when a moderator approves it).
    pub flag_count: i32,
    /// The latest reasons given with its flags (up to 5, newest first).
    pub flag_reasons: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePage {
    pub items: Vec<QueueItem>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The moderation queue: questions by moderation status, newest first, with
/// their flags (role moderator or admin).
#[utoipa::path(get, path = "/moderation/questions", tag = "civic",
    security(("bearer" = [])),
    params(QueueQuery),
    responses(
        (status = 200, description = "A page of questions, newest first", body = QueuePage),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a moderator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid status, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn moderation_queue(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(query): AppQuery<QueueQuery>,
) -> AppResult<Response> {
    user.require(&[Role::Moderator, Role::Admin])?;
    let queue = Queue::parse(query.status.as_deref()).ok_or_else(|| {
        AppError::validation("status", "must be hidden, flagged, removed or merged")
    })?;
    let page: PageRequest<(DateTime<Utc>, Uuid)> = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let (after, limit) = (page.after, page.limit);
    // One statement: the reasons come from a correlated subquery on the
    // flags' primary key (question_id, user_id), one index probe per row.
    let sql = format!(
        "SELECT {VIEW_COLUMNS}, q.flag_count,
                ARRAY(SELECT f.reason FROM question_flags f
                       WHERE f.question_id = q.id AND f.reason IS NOT NULL
                       ORDER BY f.created_at DESC, f.user_id LIMIT 5) AS flag_reasons
           FROM questions q JOIN users u ON u.id = q.author_id
          WHERE {}
            AND ($1::timestamptz IS NULL OR (q.created_at, q.id) < ($1, $2))
          ORDER BY q.created_at DESC, q.id DESC LIMIT $3",
        queue.predicate()
    );
    let freshness = state.write_tokens.freshness(user.id).await;
    let rows: Vec<QueueItem> = state
        .db
        .read_consistent(freshness, |pool| {
            let sql = sql.clone();
            async move {
                sqlx::query_as::<_, QueueItem>(sqlx::AssertSqlSafe(sql))
                    .bind(after.map(|(t, _)| t))
                    .bind(after.map(|(_, id)| id))
                    .bind(limit + 1)
                    .fetch_all(&pool)
                    .await
            }
        })
        .await?;
    let (items, next_cursor) = finish_page(rows, limit, |r| (r.question.created_at, r.question.id));
    private_json(&QueuePage { items, next_cursor })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only the entries about this question.
    #[param(value_type = Option<Uuid>)]
    pub question_id: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (of the same filter).
    /// Opaque: only a value this list returned is valid.
    #[param(max_length = 512, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// One moderation decision.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct LogEntry {
    /// Increasing: the log's order.
    pub id: i64,
    /// `approve`, `remove`, `merge`, or `auto_hide` (flags reached the threshold).
    pub action: String,
    pub question_id: Uuid,
    /// For `merge`: the question it was merged into.
    pub target_id: Option<Uuid>,
    /// The moderator; for `auto_hide`, the member whose flag reached the threshold.
    pub actor_id: Uuid,
    pub actor_name: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The moderation audit log, newest first, optionally for one question
/// (role moderator or admin).
#[utoipa::path(get, path = "/moderation/log", tag = "civic",
    security(("bearer" = [])),
    params(LogQuery),
    responses(
        (status = 200, description = "A page of log entries, newest first", body = LogPage),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a moderator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid question id, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn moderation_log(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(query): AppQuery<LogQuery>,
) -> AppResult<Response> {
    user.require(&[Role::Moderator, Role::Admin])?;
    let question_id = match query.question_id.as_deref() {
        None => None,
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| AppError::validation("question_id", "must be a UUID"))?,
        ),
    };
    let page: PageRequest<i64> = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let (after, limit) = (page.after, page.limit);
    let freshness = state.write_tokens.freshness(user.id).await;
    let rows: Vec<LogEntry> = state
        .db
        .read_consistent(freshness, |pool| async move {
            // NULL parameters switch their filter off.
            sqlx::query_as::<_, LogEntry>(
                "SELECT l.id, l.action, l.question_id, l.target_id,
                        l.moderator_id AS actor_id, u.display_name AS actor_name,
                        l.reason, l.created_at
                   FROM moderation_log l JOIN users u ON u.id = l.moderator_id
                  WHERE ($1::uuid IS NULL OR l.question_id = $1)
                    AND ($2::int8 IS NULL OR l.id < $2)
                  ORDER BY l.id DESC LIMIT $3",
            )
            .bind(question_id)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&pool)
            .await
        })
        .await?;
    let (items, next_cursor) = finish_page(rows, limit, |e| e.id);
    private_json(&LogPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_parse_with_hidden_as_the_default() {
        assert_eq!(Queue::parse(None), Some(Queue::Hidden));
        assert_eq!(Queue::parse(Some("flagged")), Some(Queue::Flagged));
        assert_eq!(Queue::parse(Some("visible")), None);
        assert_eq!(Queue::parse(Some("")), None);
    }
}
