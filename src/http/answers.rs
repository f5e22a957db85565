//! CivicQ candidate answers: one per candidate per question (a unique
//! constraint), editable, every version kept in `answer_revisions`. Only a
//! candidate on the question's ballot answers (and edits):
//! [`crate::civic::ballot::ensure_may_answer`].

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
use crate::civic::ballot::ensure_may_answer;
use crate::db::consistency::Freshness;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::moderation::question_key;
use crate::http::pagination::{PageQuery, PageRequest, finish_page};
use crate::http::practice::{private_json, remember_write};
use crate::http::questions::{MergedQuestion, after_write, gate_read, lock_open_question};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_answer, list_answers))
        .routes(routes!(edit_answer))
        .routes(routes!(list_revisions))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// 1 to 5,000 characters (line breaks allowed).
    #[schema(
        min_length = 1,
        max_length = 5000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AnswerView {
    pub id: Uuid,
    pub question_id: Uuid,
    pub candidate_id: Uuid,
    pub candidate_name: String,
    /// The candidate profile the answer was given as (null for answers
    /// older than profiles).
    pub profile_id: Option<Uuid>,
    pub body: String,
    /// 1 for the original; each edit adds one (all versions are kept).
    pub revision: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Other candidates' replies (`GET /answers/{id}/rebuttals`).
    pub rebuttal_count: i64,
}

fn answer_body(raw: &str) -> AppResult<String> {
    let body = raw.trim();
    let chars = body.chars().count();
    if chars == 0 || chars > 5000 || !crate::text::is_multi_line(body) {
        return Err(AppError::validation(
            "body",
            "must be 1 to 5000 characters of text",
        ));
    }
    Ok(body.to_owned())
}

const ANSWER_COLUMNS: &str = "a.id, a.question_id, a.candidate_id, u.display_name AS candidate_name, \
     a.profile_id, a.body, a.revision, a.created_at, a.updated_at, \
     (SELECT count(*) FROM rebuttals r WHERE r.answer_id = a.id) AS rebuttal_count";

/// The (city, contest) of a question locked by `lock_open_question`.
pub(crate) async fn question_ballot(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    created_at: DateTime<Utc>,
) -> AppResult<(i64, Option<i64>)> {
    sqlx::query_as("SELECT city_id, contest_id FROM questions WHERE created_at = $1 AND id = $2")
        .bind(created_at)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("No question with id {id}")))
}

/// A candidate answers a question (role candidate, with a candidate profile
/// in a contest of the question's city — in the question's contest if it
/// targets one; one answer per question — edit it with PUT).
#[utoipa::path(post, path = "/questions/{id}/answers", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Question id")),
    request_body = AnswerRequest,
    responses(
        (status = 201, description = "The answer", body = AnswerView),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a candidate, or not one on this question's ballot (its city, or its contest)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already answered (edit it instead), or the question was merged", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn post_answer(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(question_id): AppPath<Uuid>,
    AppJson(request): AppJson<AnswerRequest>,
) -> AppResult<Response> {
    user.require(&[Role::Candidate])?;
    let body = answer_body(&request.body)?;
    let created_at = question_key(question_id)?;
    let mut tx = state.db.write().begin().await?;
    lock_open_question(&mut tx, question_id, created_at, &user, "answers").await?;
    let (city_id, contest_id) = question_ballot(&mut tx, question_id, created_at).await?;
    let profile_id = ensure_may_answer(&mut tx, city_id, contest_id, &user).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO answers (id, question_id, candidate_id, body, profile_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ON CONSTRAINT answers_one_per_candidate DO NOTHING",
    )
    .bind(id)
    .bind(question_id)
    .bind(user.id)
    .bind(&body)
    .bind(profile_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(AppError::Conflict(
            "You already answered this question; edit your answer instead.".into(),
        ));
    }
    sqlx::query("INSERT INTO answer_revisions (answer_id, revision, body) VALUES ($1, 1, $2)")
        .bind(id)
        .bind(&body)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE questions SET answer_count = answer_count + 1 WHERE created_at = $1 AND id = $2",
    )
    .bind(created_at)
    .bind(question_id)
    .execute(&mut *tx)
    .await?;
    let answer = sqlx::query_as::<_, AnswerView>(sqlx::AssertSqlSafe(format!(
        "SELECT {ANSWER_COLUMNS} FROM answers a JOIN users u ON u.id = a.candidate_id WHERE a.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    // The question's answer_count is in the lists.
    after_write(&state, user.id).await;
    state
        .live
        .publish(
            &crate::live::Topic::Question(question_id),
            "answer.created",
            &serde_json::json!({
                "id": answer.id, "question_id": question_id,
                "candidate_id": answer.candidate_id, "candidate_name": answer.candidate_name,
            }),
        )
        .await;
    let mut response = private_json(&answer)?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Edits the caller's answer to a question, keeping the previous versions
/// (while the caller may still answer it: the same rule as posting).
#[utoipa::path(put, path = "/questions/{id}/answers/mine", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Question id")),
    request_body = AnswerRequest,
    responses(
        (status = 200, description = "The edited answer", body = AnswerView),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a candidate, or no longer one on this question's ballot", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed), or you have not answered it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The question was merged (or, to a moderator, is hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn edit_answer(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(question_id): AppPath<Uuid>,
    AppJson(request): AppJson<AnswerRequest>,
) -> AppResult<Response> {
    user.require(&[Role::Candidate])?;
    let body = answer_body(&request.body)?;
    let created_at = question_key(question_id)?;
    let mut tx = state.db.write().begin().await?;
    // The same lock and check as posting: no edits on a hidden, removed or
    // merged question, and none racing a merge that moves the answers.
    lock_open_question(&mut tx, question_id, created_at, &user, "answer edits").await?;
    let (city_id, contest_id) = question_ballot(&mut tx, question_id, created_at).await?;
    ensure_may_answer(&mut tx, city_id, contest_id, &user).await?;
    let updated: Option<(Uuid, i32)> = sqlx::query_as(
        "UPDATE answers SET body = $3, revision = revision + 1, updated_at = now()
          WHERE question_id = $1 AND candidate_id = $2 AND body <> $3
          RETURNING id, revision",
    )
    .bind(question_id)
    .bind(user.id)
    .bind(&body)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id, revision)) = updated {
        sqlx::query("INSERT INTO answer_revisions (answer_id, revision, body) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(revision)
            .bind(&body)
            .execute(&mut *tx)
            .await?;
    }
    let answer = sqlx::query_as::<_, AnswerView>(sqlx::AssertSqlSafe(format!(
        "SELECT {ANSWER_COLUMNS} FROM answers a JOIN users u ON u.id = a.candidate_id
          WHERE a.question_id = $1 AND a.candidate_id = $2"
    )))
    .bind(question_id)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| AppError::NotFound("You have not answered this question.".into()))?;
    tx.commit().await?;
    // Lists do not show answer bodies; the candidate's own next reads (the
    // answers, the revisions) must show the edit, even from a replica.
    remember_write(&state, user.id).await;
    private_json(&answer)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnswerPage {
    pub items: Vec<AnswerView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The candidates' answers to a question, oldest first, with keyset
/// pagination on (created_at, id). Like the question itself: 404 when it is
/// hidden or removed, 308 to the target's answers when merged (moderators and
/// admins read them all). A candidate's own reads see their latest edit.
#[utoipa::path(get, path = "/questions/{id}/answers", tag = "civic",
    params(("id" = Uuid, Path, description = "Question id"), PageQuery),
    responses(
        (status = 200, description = "A page of answers", body = AnswerPage),
        (status = 308, description = "The question was merged: the target's answers (see `Location`)", body = MergedQuestion,
            headers(("Location" = String, description = "The answers of the question it was merged into"))),
        (status = 400, description = "The id is not a UUID, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_answers(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    AppPath(question_id): AppPath<Uuid>,
    AppQuery(query): AppQuery<PageQuery>,
) -> AppResult<Response> {
    let page: PageRequest<(DateTime<Utc>, Uuid)> = query.parse()?;
    let created_at = question_key(question_id)?;
    let (after, limit) = (page.after, page.limit);
    let freshness = reader_freshness(&state, user.as_ref()).await;
    let (question, rows) = state
        .db
        .read_consistent(freshness, |pool| async move {
            let question = question_status(&pool, question_id, created_at).await?;
            if question.is_none() {
                return Ok((None, Vec::new()));
            }
            // NULL cursor columns switch the keyset predicate off (first
            // page). A question has one answer per candidate, a few dozen at
            // most: the unique (question_id, candidate_id) index finds them.
            let answers = sqlx::query_as::<_, AnswerView>(sqlx::AssertSqlSafe(format!(
                "SELECT {ANSWER_COLUMNS} FROM answers a JOIN users u ON u.id = a.candidate_id
                  WHERE a.question_id = $1
                    AND ($2::timestamptz IS NULL OR (a.created_at, a.id) > ($2, $3))
                  ORDER BY a.created_at, a.id LIMIT $4"
            )))
            .bind(question_id)
            .bind(after.map(|(t, _)| t))
            .bind(after.map(|(_, id)| id))
            .bind(limit + 1)
            .fetch_all(&pool)
            .await?;
            Ok((question, answers))
        })
        .await?;
    let (status, merged_into) =
        question.ok_or_else(|| AppError::NotFound(format!("No question with id {question_id}")))?;
    if let Some(pointer) = gate_read(
        question_id,
        &status,
        merged_into,
        user.as_ref(),
        "/answers",
        Some(&query),
    )? {
        return Ok(pointer);
    }
    let (items, next_cursor) = finish_page(rows, limit, |a| (a.created_at, a.id));
    private_json(&AnswerPage { items, next_cursor })
}

/// A question's (status, merged_into), or None when there is no such question.
pub(crate) async fn question_status(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    created_at: DateTime<Utc>,
) -> Result<Option<(String, Option<Uuid>)>, sqlx::Error> {
    sqlx::query_as("SELECT status, merged_into FROM questions WHERE created_at = $1 AND id = $2")
        .bind(created_at)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Signed-in readers see their own latest writes (read-your-writes); others
/// read any replica in rotation.
async fn reader_freshness(state: &AppState, user: Option<&AuthUser>) -> Freshness {
    match user {
        Some(user) => state.write_tokens.freshness(user.id).await,
        None => Freshness::Any,
    }
}

/// One version of an answer.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AnswerRevision {
    /// 1 for the original, then one more per edit.
    pub revision: i32,
    pub body: String,
    /// When this version was written.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevisionPage {
    pub items: Vec<AnswerRevision>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Every version of a candidate's answer, newest first, with keyset
/// pagination on the revision number. Public like the answer (the same rules
/// for hidden, removed and merged questions); a candidate who just edited sees
/// the edit at once.
#[utoipa::path(get, path = "/questions/{id}/answers/{answer_id}/revisions", tag = "civic",
    params(
        ("id" = Uuid, Path, description = "Question id"),
        ("answer_id" = Uuid, Path, description = "Answer id"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of versions, newest first", body = RevisionPage),
        (status = 308, description = "The question was merged: the same answer under the target (see `Location`)", body = MergedQuestion,
            headers(("Location" = String, description = "The revisions under the question it was merged into"))),
        (status = 400, description = "An id is not a UUID, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed), or no such answer to it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_revisions(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    AppPath((question_id, answer_id)): AppPath<(Uuid, Uuid)>,
    AppQuery(query): AppQuery<PageQuery>,
) -> AppResult<Response> {
    let page: PageRequest<i32> = query.parse()?;
    let created_at = question_key(question_id)?;
    let (after, limit) = (page.after, page.limit);
    let freshness = reader_freshness(&state, user.as_ref()).await;
    let (question, answered, rows) = state
        .db
        .read_consistent(freshness, |pool| async move {
            let question = question_status(&pool, question_id, created_at).await?;
            let answered: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM answers WHERE id = $1 AND question_id = $2)",
            )
            .bind(answer_id)
            .bind(question_id)
            .fetch_one(&pool)
            .await?;
            // The primary key (answer_id, revision) serves this backwards.
            let revisions = sqlx::query_as::<_, AnswerRevision>(
                "SELECT revision, body, created_at FROM answer_revisions
                  WHERE answer_id = $1 AND ($2::int4 IS NULL OR revision < $2)
                  ORDER BY revision DESC LIMIT $3",
            )
            .bind(answer_id)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&pool)
            .await?;
            Ok((question, answered, revisions))
        })
        .await?;
    let (status, merged_into) =
        question.ok_or_else(|| AppError::NotFound(format!("No question with id {question_id}")))?;
    if let Some(pointer) = gate_read(
        question_id,
        &status,
        merged_into,
        user.as_ref(),
        &format!("/answers/{answer_id}/revisions"),
        Some(&query),
    )? {
        return Ok(pointer);
    }
    if !answered {
        return Err(AppError::NotFound(format!(
            "No answer with id {answer_id} to this question"
        )));
    }
    let (items, next_cursor) = finish_page(rows, limit, |r| r.revision);
    private_json(&RevisionPage { items, next_cursor })
}
