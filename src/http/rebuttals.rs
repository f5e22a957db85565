//! CivicQ rebuttals: a candidate's one reply to another candidate's answer,
//! when both run in the same contest (the rule is
//! [`crate::civic::ballot::rebuttal_profile`]); one per candidate per answer
//! (a unique constraint, so of two concurrent posts one wins and the other
//! is a 409). Rebuttals follow their answer through merges and go with it.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AuthUser, Role};
use crate::civic::ballot::rebuttal_profile;
use crate::civic::visibility::{self, Visibility};
use crate::db::consistency::Freshness;
use crate::error::{AppError, AppResult, Problem};
use crate::http::answers::{question_ballot, question_status};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::moderation::question_key;
use crate::http::pagination::{PageQuery, PageRequest, finish_page};
use crate::http::practice::{private_json, remember_write};
use crate::http::questions::{created_at_of, is_moderator, lock_open_question};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_rebuttal, list_rebuttals))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuttalRequest {
    /// 1 to 2,000 characters (line breaks allowed).
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub body: String,
}

/// A candidate's reply to another candidate's answer.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RebuttalView {
    pub id: Uuid,
    pub answer_id: Uuid,
    /// The rebutting candidate's account.
    pub candidate_id: Uuid,
    /// The profile (in the contest both candidates share) it was given as.
    pub profile_id: Uuid,
    /// That profile's name.
    pub candidate_name: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RebuttalPage {
    pub items: Vec<RebuttalView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

const REBUTTAL_COLUMNS: &str = "r.id, r.answer_id, r.author_id AS candidate_id, r.profile_id, \
     p.display_name AS candidate_name, r.body, r.created_at";

fn no_answer(id: Uuid) -> AppError {
    AppError::NotFound(format!("No answer with id {id}"))
}

/// The (question, author) of answer `id`.
async fn answer_of(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT question_id, candidate_id FROM answers WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A candidate replies once to another candidate's answer: both must hold
/// profiles in the same contest — the question's contest when it targets
/// one, else a contest of the question's city they share. Not to one's own
/// answer. The question must take answers (not hidden, removed or merged).
#[utoipa::path(post, path = "/answers/{id}/rebuttals", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Answer id")),
    request_body = RebuttalRequest,
    responses(
        (status = 201, description = "The rebuttal", body = RebuttalView),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a candidate, your own answer, or no contest shared with its author", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such answer (or its question is hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already rebutted by you, or the question was merged", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn post_rebuttal(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(answer_id): AppPath<Uuid>,
    AppJson(request): AppJson<RebuttalRequest>,
) -> AppResult<Response> {
    user.require(&[Role::Candidate])?;
    let body = request.body.trim();
    let chars = body.chars().count();
    if chars == 0 || chars > 2000 || !crate::text::is_multi_line(body) {
        return Err(AppError::validation(
            "body",
            "must be 1 to 2000 characters of text",
        ));
    }
    let mut tx = state.db.write().begin().await?;
    let (question_id, _) = answer_of(&mut tx, answer_id)
        .await?
        .ok_or_else(|| no_answer(answer_id))?;
    let created_at = question_key(question_id)?;
    // The question's lock orders this with merges (which move answers) and
    // with answer deletions; read the answer again under it.
    lock_open_question(&mut tx, question_id, created_at, &user, "rebuttals").await?;
    let (now_under, author) = answer_of(&mut tx, answer_id)
        .await?
        .ok_or_else(|| no_answer(answer_id))?;
    if now_under != question_id {
        return Err(AppError::Conflict(
            "This answer just moved to another question (a merge); retry.".into(),
        ));
    }
    let (city_id, contest_id) = question_ballot(&mut tx, question_id, created_at).await?;
    let profile_id = rebuttal_profile(&mut tx, city_id, contest_id, author, &user).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO rebuttals (id, answer_id, author_id, profile_id, body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ON CONSTRAINT rebuttals_one_per_candidate DO NOTHING",
    )
    .bind(id)
    .bind(answer_id)
    .bind(user.id)
    .bind(profile_id)
    .bind(body)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(AppError::Conflict(
            "You already rebutted this answer (one rebuttal per candidate per answer).".into(),
        ));
    }
    let rebuttal = sqlx::query_as::<_, RebuttalView>(sqlx::AssertSqlSafe(format!(
        "SELECT {REBUTTAL_COLUMNS} FROM rebuttals r
           JOIN candidate_profiles p ON p.id = r.profile_id
          WHERE r.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    // Answer pages (not cached) count rebuttals; the candidate's next reads
    // must show this one.
    remember_write(&state, user.id).await;
    let mut response = private_json(&rebuttal)?;
    *response.status_mut() = axum::http::StatusCode::CREATED;
    Ok(response)
}

/// The rebuttals of an answer, oldest first, with keyset pagination on
/// (created_at, id). Public, under the rules of the answer's question:
/// 404 when it is hidden or removed, or when the answer stayed on a merged
/// question (a candidate who answered both keeps the target's answer);
/// moderators and admins read them all.
#[utoipa::path(get, path = "/answers/{id}/rebuttals", tag = "civic",
    params(("id" = Uuid, Path, description = "Answer id"), PageQuery),
    responses(
        (status = 200, description = "A page of rebuttals, oldest first", body = RebuttalPage),
        (status = 400, description = "The id is not a UUID, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such answer (or its question is hidden, removed or merged)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_rebuttals(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    AppPath(answer_id): AppPath<Uuid>,
    AppQuery(query): AppQuery<PageQuery>,
) -> AppResult<Response> {
    let page: PageRequest<(DateTime<Utc>, Uuid)> = query.parse()?;
    let (after, limit) = (page.after, page.limit);
    let freshness = match user.as_ref() {
        Some(user) => state.write_tokens.freshness(user.id).await,
        None => Freshness::Any,
    };
    let (question, rows) = state
        .db
        .read_consistent(freshness, |pool| async move {
            // The answer's question, by its partition key (from its id).
            let question_id: Option<Uuid> =
                sqlx::query_scalar("SELECT question_id FROM answers WHERE id = $1")
                    .bind(answer_id)
                    .fetch_optional(&pool)
                    .await?;
            let Some((question_id, created_at)) =
                question_id.and_then(|q| Some((q, created_at_of(q)?)))
            else {
                return Ok((None, Vec::new()));
            };
            let question = question_status(&pool, question_id, created_at).await?;
            if question.is_none() {
                return Ok((None, Vec::new()));
            }
            // NULL cursor columns switch the keyset predicate off (first
            // page); rebuttals_answer_created serves the order.
            let rows = sqlx::query_as::<_, RebuttalView>(sqlx::AssertSqlSafe(format!(
                "SELECT {REBUTTAL_COLUMNS} FROM rebuttals r
                   JOIN candidate_profiles p ON p.id = r.profile_id
                  WHERE r.answer_id = $1
                    AND ($2::timestamptz IS NULL OR (r.created_at, r.id) > ($2, $3))
                  ORDER BY r.created_at, r.id LIMIT $4"
            )))
            .bind(answer_id)
            .bind(after.map(|(t, _)| t))
            .bind(after.map(|(_, id)| id))
            .bind(limit + 1)
            .fetch_all(&pool)
            .await?;
            Ok((question, rows))
        })
        .await?;
    let (status, merged_into) = question.ok_or_else(|| no_answer(answer_id))?;
    if visibility::for_reader(&status, merged_into, is_moderator(user.as_ref()))
        != Visibility::Shown
    {
        return Err(no_answer(answer_id));
    }
    let (items, next_cursor) = finish_page(rows, limit, |r| (r.created_at, r.id));
    private_json(&RebuttalPage { items, next_cursor })
}
