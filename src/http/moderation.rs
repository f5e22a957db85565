//! CivicQ moderation.
//!
//! - `POST /questions/{id}/flags`: one flag per user (primary key); after
//!   `CIVIC_FLAGS_TO_HIDE` distinct flags the question is hidden until a
//!   moderator decides (logged as `auto_hide`).
//! - `POST /questions/{id}/moderation` (moderator or admin): `approve`,
//!   `remove`, or `merge` into another question of the same city. Merging
//!   moves votes without double counting: a user who voted on both keeps
//!   their vote on the target; the target's counters are recomputed from its
//!   votes, and answers move too (one per candidate on the target), with
//!   their rebuttals. A question addressed to a contest merges only into one
//!   addressed to the same contest or to none (its answers came from that
//!   contest's candidates, who are candidates of the city); one addressed to
//!   none merges only into one addressed to none. Every action is written to
//!   `moderation_log` in its transaction.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AuthUser, Role};
use crate::civic::ranking;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{AppJson, AppPath};
use crate::http::practice::private_json;
use crate::http::questions::{after_write, created_at_of, lock_open_question};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(flag_question))
        .routes(routes!(moderate_question))
}

pub(crate) fn question_key(id: Uuid) -> AppResult<DateTime<Utc>> {
    created_at_of(id).ok_or_else(|| AppError::NotFound(format!("No question with id {id}")))
}

/// A trimmed reason (empty = none): at most 200 characters, no control characters.
fn optional_reason(raw: Option<String>) -> AppResult<Option<String>> {
    let reason = raw.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > 200 || !crate::text::is_single_line(r))
    {
        return Err(AppError::validation(
            "reason",
            "must be at most 200 characters of text",
        ));
    }
    Ok(reason)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagRequest {
    /// Why (optional, up to 200 characters).
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlagResult {
    /// Distinct users who flagged the question.
    pub flag_count: i32,
    /// `hidden` once the flags reached the threshold.
    pub status: String,
}

/// Flags a question for moderation (once per user; flagging again is a 409).
#[utoipa::path(post, path = "/questions/{id}/flags", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Question id")),
    request_body = FlagRequest,
    responses(
        (status = 201, description = "Flag recorded", body = FlagResult),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already flagged by you", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Reason too long", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn flag_question(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<FlagRequest>,
) -> AppResult<Response> {
    let reason = optional_reason(request.reason)?;
    let created_at = question_key(id)?;
    let threshold = state.config.civic.flags_to_hide;
    let mut tx = state.db.write().begin().await?;
    lock_open_question(&mut tx, id, created_at, &user, "flags").await?;
    let inserted = sqlx::query(
        "INSERT INTO question_flags (question_id, user_id, reason) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(user.id)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(AppError::Conflict(
            "You already flagged this question.".into(),
        ));
    }
    let flag_count: i32 = sqlx::query_scalar(
        "UPDATE questions SET flag_count = flag_count + 1
          WHERE created_at = $1 AND id = $2 RETURNING flag_count",
    )
    .bind(created_at)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let hide = flag_count >= threshold;
    if hide {
        sqlx::query("UPDATE questions SET status = 'hidden' WHERE created_at = $1 AND id = $2")
            .bind(created_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO moderation_log (moderator_id, action, question_id, reason)
             VALUES ($1, 'auto_hide', $2, $3)",
        )
        .bind(user.id)
        .bind(id)
        .bind(format!("{flag_count} distinct flags"))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if hide {
        after_write(&state, user.id).await;
    }
    let result = FlagResult {
        flag_count,
        status: if hide { "hidden" } else { "visible" }.into(),
    };
    let mut response = private_json(&result)?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    Approve,
    Remove,
    Merge,
}

/// A moderator's decision, tagged by `action`: `approve` or `remove` take an
/// optional reason; `merge` also needs the `target_id` it duplicates (same
/// city), and only `merge` takes one — so the document describes exactly the
/// bodies the server accepts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModerationRequest {
    /// Makes a hidden (or removed) question visible again; its flags are
    /// cleared. Undoing a removal is deliberate and logged like any action.
    Approve {
        /// Recorded in the audit log.
        #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
        reason: Option<String>,
    },
    /// Takes the question out of every list until a moderator approves it.
    Remove {
        /// Recorded in the audit log.
        #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
        reason: Option<String>,
    },
    /// Merges the question into `target_id`, moving its votes and answers.
    Merge {
        /// The question this one duplicates (same city).
        target_id: Uuid,
        /// Recorded in the audit log.
        #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
        reason: Option<String>,
    },
}

impl ModerationRequest {
    fn into_parts(self) -> (ModerationAction, Option<Uuid>, Option<String>) {
        match self {
            ModerationRequest::Approve { reason } => (ModerationAction::Approve, None, reason),
            ModerationRequest::Remove { reason } => (ModerationAction::Remove, None, reason),
            ModerationRequest::Merge { target_id, reason } => {
                (ModerationAction::Merge, Some(target_id), reason)
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModerationResult {
    pub question_id: Uuid,
    /// The question's status after the action.
    pub status: String,
    /// For `merge`: votes moved to the target (voters of both kept one vote).
    pub votes_moved: Option<i64>,
    /// For `merge`: answers moved to the target (a candidate who answered
    /// both keeps the target's answer there).
    pub answers_moved: Option<i64>,
}

/// Approves (visible again, flags cleared), removes, or merges a question
/// into a duplicate (role moderator or admin). Audited.
#[utoipa::path(post, path = "/questions/{id}/moderation", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Question id")),
    request_body = ModerationRequest,
    responses(
        (status = 200, description = "Done", body = ModerationResult),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a moderator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or target)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already merged, or target not mergeable (not visible, another city, or addressed to another contest)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or invalid target/reason", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn moderate_question(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<ModerationRequest>,
) -> AppResult<Response> {
    user.require(&[Role::Moderator, Role::Admin])?;
    let (action, target_id, reason) = request.into_parts();
    let reason = optional_reason(reason)?;
    let created_at = question_key(id)?;
    let target = match target_id {
        Some(target) if target == id => {
            return Err(AppError::validation(
                "target_id",
                "cannot merge a question into itself",
            ));
        }
        Some(target) => Some((target, question_key(target)?)),
        None => None,
    };
    let mut tx = state.db.write().begin().await?;
    // Lock both questions in a fixed order (by id), so two merges of the same
    // pair in opposite directions cannot deadlock.
    let mut keys = vec![(id, created_at)];
    if let Some(t) = target {
        keys.push(t);
    }
    keys.sort_by_key(|(q, _)| *q);
    let mut found: Vec<(Uuid, i64, String, Option<i64>)> = Vec::new();
    for (q, at) in &keys {
        let row: Option<(Uuid, i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, city_id, status, contest_id FROM questions
              WHERE created_at = $1 AND id = $2 FOR UPDATE",
        )
        .bind(at)
        .bind(q)
        .fetch_optional(&mut *tx)
        .await?;
        found.push(row.ok_or_else(|| AppError::NotFound(format!("No question with id {q}")))?);
    }
    let this = found
        .iter()
        .find(|(q, _, _, _)| *q == id)
        .cloned()
        .ok_or_else(|| AppError::NotFound(format!("No question with id {id}")))?;
    if this.2 == "merged" {
        return Err(AppError::Conflict(
            "This question was already merged.".into(),
        ));
    }
    let mut votes_moved = None;
    let mut answers_moved = None;
    let status = match action {
        ModerationAction::Approve => {
            sqlx::query(
                "UPDATE questions SET status = 'visible', flag_count = 0
                  WHERE created_at = $1 AND id = $2",
            )
            .bind(created_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM question_flags WHERE question_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            "visible"
        }
        ModerationAction::Remove => {
            sqlx::query(
                "UPDATE questions SET status = 'removed' WHERE created_at = $1 AND id = $2",
            )
            .bind(created_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            "removed"
        }
        ModerationAction::Merge => {
            let (target_id, target_at) =
                target.ok_or_else(|| AppError::validation("target_id", "is required to merge"))?;
            let target_row = found
                .iter()
                .find(|(q, _, _, _)| *q == target_id)
                .cloned()
                .ok_or_else(|| AppError::NotFound(format!("No question with id {target_id}")))?;
            if target_row.1 != this.1 {
                return Err(AppError::Conflict(
                    "Only questions of the same city can be merged.".into(),
                ));
            }
            // Answers move with the merge: the target must not be addressed
            // to candidates other than the ones who could answer the source.
            if target_row.3.is_some() && target_row.3 != this.3 {
                return Err(AppError::Conflict(
                    "The target question is addressed to another contest (or this one to \
                     none); merge into a question of the same contest or of none."
                        .into(),
                ));
            }
            if target_row.2 != "visible" {
                return Err(AppError::Conflict(format!(
                    "The target question is {}; merge into a visible one.",
                    target_row.2
                )));
            }
            // Votes of users who did not vote on the target move there; the
            // others' votes on the source simply go (the target vote stays).
            let moved = sqlx::query(
                "INSERT INTO question_votes (question_id, user_id, value, created_at, updated_at)
                 SELECT $2, user_id, value, created_at, now()
                   FROM question_votes WHERE question_id = $1
                 ON CONFLICT (question_id, user_id) DO NOTHING",
            )
            .bind(id)
            .bind(target_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM question_votes WHERE question_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let (up, down): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE value = 1), count(*) FILTER (WHERE value = -1)
                   FROM question_votes WHERE question_id = $1",
            )
            .bind(target_id)
            .fetch_one(&mut *tx)
            .await?;
            let up = i32::try_from(up).unwrap_or(i32::MAX);
            let down = i32::try_from(down).unwrap_or(i32::MAX);
            sqlx::query(
                "UPDATE questions SET upvotes = $3, downvotes = $4, hot = $5
                  WHERE created_at = $1 AND id = $2",
            )
            .bind(target_at)
            .bind(target_id)
            .bind(up)
            .bind(down)
            .bind(ranking::hot(i64::from(up) - i64::from(down), target_at))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE questions SET status = 'merged', merged_into = $3, upvotes = 0,
                        downvotes = 0, hot = $4
                  WHERE created_at = $1 AND id = $2",
            )
            .bind(created_at)
            .bind(id)
            .bind(target_id)
            .bind(ranking::hot(0, created_at))
            .execute(&mut *tx)
            .await?;
            votes_moved = Some(i64::try_from(moved).unwrap_or(i64::MAX));
            // Answers follow the votes, since residents are pointed at the
            // target: each candidate keeps one answer there (an answer to
            // both stays here, where moderators still read it).
            let answers = sqlx::query(
                "UPDATE answers SET question_id = $2
                  WHERE question_id = $1
                    AND candidate_id NOT IN (SELECT candidate_id FROM answers WHERE question_id = $2)",
            )
            .bind(id)
            .bind(target_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Video answers move by the same rule (one per candidate there).
            sqlx::query(
                "UPDATE video_answers SET question_id = $2, updated_at = now()
                  WHERE question_id = $1
                    AND candidate_id NOT IN (SELECT candidate_id FROM video_answers WHERE question_id = $2)",
            )
            .bind(id)
            .bind(target_id)
            .execute(&mut *tx)
            .await?;
            let answers = i32::try_from(answers).unwrap_or(i32::MAX);
            for (at, q, delta) in [(target_at, target_id, answers), (created_at, id, -answers)] {
                sqlx::query(
                    "UPDATE questions SET answer_count = answer_count + $3
                      WHERE created_at = $1 AND id = $2",
                )
                .bind(at)
                .bind(q)
                .bind(delta)
                .execute(&mut *tx)
                .await?;
            }
            answers_moved = Some(i64::from(answers));
            "merged"
        }
    };
    let action = match action {
        ModerationAction::Approve => "approve",
        ModerationAction::Remove => "remove",
        ModerationAction::Merge => "merge",
    };
    sqlx::query(
        "INSERT INTO moderation_log (moderator_id, action, question_id, target_id, reason)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user.id)
    .bind(action)
    .bind(id)
    .bind(target.map(|(t, _)| t))
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    after_write(&state, user.id).await;
    private_json(&ModerationResult {
        question_id: id,
        status: status.into(),
        votes_moved,
        answers_moved,
    })
}
