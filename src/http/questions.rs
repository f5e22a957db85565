//! CivicQ questions and votes.
//!
//! - Posting checks the text, a per-user daily limit (Redis), and looks for
//!   similar questions in the city (trigram similarity + full-text search);
//!   with `reject_duplicates` a near-duplicate is a 409 listing the matches.
//! - Votes: one per user per question (primary key); the question's counters
//!   change in the same transaction, under the question's row lock, so
//!   concurrent votes never lose an update.
//! - Lists (`top`, `new`, `hot`) and popular questions are public and cached;
//!   every write bumps their cache generation, and their loaders read only
//!   from a replica that has that write (consistency token per namespace).
//! - Writes honor `Idempotency-Key`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AuthUser, ClientIp, Role};
use crate::cache::Namespace;
use crate::civic::ranking::{self, Sort};
use crate::civic::text;
use crate::civic::visibility::{self, Visibility};
use crate::db::consistency::Freshness;
use crate::error::{AppError, AppResult, FieldError, PROBLEM_CONTENT_TYPE, Problem};
use crate::http::caching::etag_of;
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::idempotency::{self, Guard, IdempotencyKey, Outcome as Idempotent};
use crate::http::limits::{spend_ip_limit, spend_user_limit};
use crate::http::pagination::{PageQuery, PageRequest, finish_page};
use crate::http::practice::private_json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_question, list_city_questions))
        .routes(routes!(popular_questions))
        .routes(routes!(similar_questions))
        .routes(routes!(get_question))
        .routes(routes!(put_vote, delete_vote))
}

/// Lists change with every vote: shared caches keep them a few seconds.
const LIST_CACHE: &str = "public, max-age=5, stale-while-revalidate=10";

/// Consistency-token scope of the CivicQ list caches.
const LISTS_SCOPE: &str = "cache:civic";

/// The creation time embedded in a UUIDv7 (milliseconds), which is also the
/// question's partition key; None for other UUIDs.
pub fn created_at_of(id: Uuid) -> Option<DateTime<Utc>> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// A question as everyone sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct QuestionView {
    pub id: Uuid,
    pub city_id: i64,
    /// The contest of the city's ballot the question is addressed to (only
    /// that contest's candidates answer it), or null for every candidate of
    /// the city.
    pub contest_id: Option<i64>,
    pub author_id: Uuid,
    pub author_name: String,
    pub body: String,
    pub tags: Vec<String>,
    /// `visible`, `hidden` (awaiting moderation), `removed` or `merged`.
    pub status: String,
    /// Set when merged into another question.
    pub merged_into: Option<Uuid>,
    pub upvotes: i32,
    pub downvotes: i32,
    /// upvotes − downvotes.
    pub score: i32,
    pub answer_count: i32,
    pub created_at: DateTime<Utc>,
}

pub(crate) const VIEW_COLUMNS: &str = "q.id, q.city_id, q.contest_id, q.author_id, u.display_name AS author_name, q.body, \
     q.tags, q.status, q.merged_into, q.upvotes, q.downvotes, q.score, q.answer_count, q.created_at";

/// One question with the caller's own vote.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionDetail {
    #[serde(flatten)]
    pub question: QuestionView,
    /// The caller's vote (1, -1), or null (also when not signed in).
    pub my_vote: Option<i16>,
}

/// A similar question and how similar (0–1, trigram similarity).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SimilarQuestion {
    pub id: Uuid,
    pub body: String,
    pub score: i32,
    pub similarity: f32,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuestion {
    /// 10 to 500 characters (runs of whitespace count as one space).
    #[schema(
        min_length = 10,
        max_length = 500,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+( [^\s\x00-\x1f\x7f-\x9f]+)*$"
    )]
    pub body: String,
    /// Up to 5 tags of letters, digits, `_` and `-` (case-insensitive).
    #[serde(default)]
    #[schema(max_items = 5, inline, value_type = Vec<TagSchema>)]
    pub tags: Vec<String>,
    /// Refuse (409) when a near-duplicate exists in the city, so the client
    /// can offer to upvote it instead.
    #[serde(default)]
    pub reject_duplicates: bool,
    /// Addresses the question to one contest of the city's ballot (a
    /// contest of an election of this city, else 422): only its candidates
    /// answer it. Null or absent: every candidate of the city.
    #[serde(default, deserialize_with = "crate::http::extract::optional_integer")]
    #[schema(minimum = 1)]
    pub contest_id: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedQuestion {
    pub question: QuestionView,
    /// Questions in the city that look alike (best first).
    pub similar: Vec<SimilarQuestion>,
}

/// A tag (documentation type for [`NewQuestion::tags`]).
#[derive(ToSchema)]
#[schema(value_type = String, pattern = r"^[\w-]{1,30}$")]
pub struct TagSchema(#[allow(dead_code)] String);

/// The 409 body for a near-duplicate: a problem document plus the matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateProblem {
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub similar: Vec<SimilarQuestion>,
}

/// Looks for similar visible questions in a city: trigram similarity on the
/// text, or a full-text match; best first.
async fn find_similar(
    state: &AppState,
    city_id: i64,
    text: &str,
    limit: i64,
) -> AppResult<Vec<SimilarQuestion>> {
    Ok(state
        .db
        .read(|pool| async move { similar_in(&pool, city_id, text, limit).await })
        .await?)
}

/// The visible questions of a city most like `text`, best first.
async fn similar_in<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    city_id: i64,
    text: &str,
    limit: i64,
) -> Result<Vec<SimilarQuestion>, sqlx::Error> {
    let rows: Vec<(Uuid, String, i32, f32)> = sqlx::query_as(
        "SELECT id, body, score, similarity(body, $2) AS similarity
           FROM questions
          WHERE city_id = $1 AND status = 'visible'
            AND (body % $2 OR search @@ plainto_tsquery('english', $2))
          ORDER BY similarity DESC, score DESC
          LIMIT $3",
    )
    .bind(city_id)
    .bind(text)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, body, score, similarity)| SimilarQuestion {
            id,
            body,
            score,
            similarity,
        })
        .collect())
}

/// Whether `contest_id` is a contest of an election of city `city_id`, read
/// from the primary (an administrator may have just added it). A contest
/// never changes election, nor an election city, so the answer stays true.
async fn contest_in_city(state: &AppState, city_id: i64, contest_id: i64) -> AppResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM contests c JOIN elections e ON e.id = c.election_id
                         WHERE c.id = $1 AND e.city_id = $2)",
    )
    .bind(contest_id)
    .bind(city_id)
    .fetch_one(state.db.write())
    .await?)
}

async fn city_exists(state: &AppState, city_id: i64) -> AppResult<()> {
    let found: Option<i64> = state
        .db
        .read(|pool| async move {
            sqlx::query_scalar("SELECT id FROM cities WHERE id = $1")
                .bind(city_id)
                .fetch_optional(&pool)
                .await
        })
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| AppError::NotFound(format!("No city with id {city_id}")))
}

/// After a CivicQ write that lists show commits (a question, a vote, an
/// answer count, a moderation): lists are invalidated everywhere, and their
/// loaders and the writer's own reads must see this write (consistency tokens
/// for the list scope and the user) — without the list token, a loader could
/// re-cache the old page from a replica that has not replayed the write yet.
pub(crate) async fn after_write(state: &AppState, user_id: Uuid) {
    match state.db.current_lsn().await {
        Ok(lsn) => {
            let user = user_id.to_string();
            state
                .write_tokens
                .record_scopes(&[&user, LISTS_SCOPE], lsn)
                .await;
        }
        Err(e) => tracing::warn!(error = %e, "could not read the commit position"),
    }
    // After the lists' token: an instance that reloads on this message must
    // already be told to read at least this write.
    state
        .cache
        .invalidate_all(&[Namespace::Questions, Namespace::Popular])
        .await;
}

/// Asks the candidates of a city a question. Returns the question and similar
/// ones already asked; with `reject_duplicates`, a near-duplicate is a 409
/// listing the matches. Honors `Idempotency-Key`.
#[utoipa::path(post, path = "/cities/{id}/questions", tag = "civic",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "City id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe",
            min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    request_body = NewQuestion,
    responses(
        (status = 201, description = "Created", body = CreatedQuestion),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A near-duplicate exists (with `reject_duplicates`)", body = DuplicateProblem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body or tags", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many questions today", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_question(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(city_id): AppPath<i64>,
    key: Option<IdempotencyKey>,
    AppJson(request): AppJson<NewQuestion>,
) -> AppResult<Response> {
    let mut errors = Vec::new();
    let body = text::normalize_body(&request.body)
        .map_err(|m| errors.push(FieldError::new("body", m)))
        .ok();
    let tags = text::normalize_tags(&request.tags)
        .map_err(|m| errors.push(FieldError::new("tags", m)))
        .ok();
    let (Some(body), Some(tags)) = (body, tags) else {
        return Err(AppError::Validation(errors));
    };
    city_exists(&state, city_id).await?;
    if let Some(contest_id) = request.contest_id {
        contest_in_city(&state, city_id, contest_id)
            .await?
            .then_some(())
            .ok_or_else(|| {
                AppError::validation("contest_id", "is not a contest of an election of this city")
            })?;
    }
    let contest_id = request.contest_id;
    let fingerprint =
        idempotency::fingerprint("POST", &format!("/cities/{city_id}/questions"), &request)?;
    let guard = key.as_ref().map(|key| Guard {
        user_id: user.id,
        key,
        fingerprint,
    });

    // The search runs before the replay check, on purpose: a question it
    // finds is committed, and so is the Idempotency-Key stored in the same
    // transaction, so a retry whose first attempt created one of these
    // matches is always answered with its stored 201 below, never refused as
    // a duplicate of itself. (A first attempt still in flight is invisible to
    // both; the guarded transaction waits for it and replays it.)
    let similar = find_similar(&state, city_id, &body, 5).await?;
    if let Some(guard) = &guard
        && let Some(replay) = idempotency::replay(state.db.write(), guard).await?
    {
        return Ok(replay);
    }
    let duplicates: Vec<SimilarQuestion> = similar
        .iter()
        .filter(|s| f64::from(s.similarity) >= state.config.civic.duplicate_similarity)
        .cloned()
        .collect();
    if request.reject_duplicates && !duplicates.is_empty() {
        return Ok(duplicate_response(duplicates));
    }
    spend_user_limit(
        &state,
        user.id,
        "questions-user",
        state.config.civic.questions_per_user,
    )
    .await?;
    let id = Uuid::now_v7();
    let created_at = created_at_of(id)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("UUIDv7 without a timestamp")))?;
    let threshold = state.config.civic.duplicate_similarity;
    let reject_duplicates = request.reject_duplicates;
    // Duplicates found inside the transaction (a concurrent copy committed
    // after the search above).
    let mut raced: Option<Vec<SimilarQuestion>> = None;
    let raced_slot = &mut raced;
    let outcome = idempotency::transaction(
        state.db.write(),
        guard,
        StatusCode::CREATED,
        async move |tx| {
            if reject_duplicates {
                // The search above ran outside any lock: two copies of one
                // question posted at once would both pass it. Posts that
                // refuse duplicates take turns per city and look again.
                sqlx::query(
                    "SELECT pg_advisory_xact_lock(hashtextextended('question-dedupe:' || $1::text, 0))",
                )
                .bind(city_id)
                .execute(&mut *tx)
                .await?;
                let duplicates: Vec<SimilarQuestion> = similar_in(&mut *tx, city_id, &body, 5)
                    .await?
                    .into_iter()
                    .filter(|s| f64::from(s.similarity) >= threshold)
                    .collect();
                if !duplicates.is_empty() {
                    *raced_slot = Some(duplicates);
                    return Err(AppError::Conflict("A duplicate was just posted.".into()));
                }
            }
            sqlx::query(
                "INSERT INTO questions (created_at, id, city_id, author_id, body, tags, hot, contest_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(created_at)
            .bind(id)
            .bind(city_id)
            .bind(user.id)
            .bind(&body)
            .bind(&tags)
            .bind(ranking::hot(0, created_at))
            .bind(contest_id)
            .execute(&mut *tx)
            .await?;
            let question = load_question(tx, id).await?;
            Ok(CreatedQuestion { question, similar })
        },
    )
    .await;
    let outcome = match (outcome, raced) {
        (Err(_), Some(duplicates)) => return Ok(duplicate_response(duplicates)),
        (outcome, _) => outcome?,
    };
    if let Idempotent::Done { value, .. } = &outcome {
        after_write(&state, user.id).await;
        state
            .live
            .publish(
                &crate::live::Topic::City(city_id),
                "question.created",
                &serde_json::to_value(&value.question).unwrap_or_default(),
            )
            .await;
    }
    Ok(outcome.into_response())
}

fn duplicate_response(similar: Vec<SimilarQuestion>) -> Response {
    let problem = DuplicateProblem {
        type_: "/problems/duplicate-question".into(),
        title: "Conflict".into(),
        status: 409,
        detail: "A very similar question was already asked in this city; consider voting for it."
            .into(),
        similar,
    };
    let mut response = (StatusCode::CONFLICT, axum::Json(problem)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    response
}

/// One question by id (inside a transaction or on any connection).
async fn load_question(conn: &mut PgConnection, id: Uuid) -> Result<QuestionView, sqlx::Error> {
    let created_at = created_at_of(id).ok_or(sqlx::Error::RowNotFound)?;
    sqlx::query_as::<_, QuestionView>(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM questions q JOIN users u ON u.id = q.author_id
          WHERE q.created_at = $1 AND q.id = $2"
    )))
    .bind(created_at)
    .bind(id)
    .fetch_one(conn)
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `top` (net votes, then newest), `new` or `hot` (the default; see docs/api.md).
    #[param(value_type = Option<String>, pattern = "^(top|new|hot)$")]
    pub sort: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (of the same sort).
    /// Opaque: only a value this list returned is valid.
    #[param(max_length = 512, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
    /// Only the questions addressed to this contest of the city's ballot
    /// (404 if it is not one).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub contest_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionPage {
    pub items: Vec<QuestionView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The visible questions of a city, by `top`, `new` or `hot`, with keyset
/// pagination; with `contest_id`, only those addressed to that contest.
/// Public and cached; a vote shows here within seconds.
#[utoipa::path(get, path = "/cities/{id}/questions", tag = "civic",
    params(("id" = i64, Path, description = "City id"), ListQuery),
    responses(
        (status = 200, description = "A page of questions", body = QuestionPage),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed query or id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such city, or no such contest in it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid sort, limit, cursor or contest id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_city_questions(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppPath(city_id): AppPath<i64>,
    AppQuery(query): AppQuery<ListQuery>,
) -> AppResult<Response> {
    let sort = match query.sort.as_deref() {
        None => Sort::Hot,
        Some(raw) => Sort::from_key(raw)
            .ok_or_else(|| AppError::validation("sort", "must be top, new or hot"))?,
    };
    let contest_id = match query.contest_id.as_deref() {
        None => None,
        Some(raw) => Some(
            crate::http::pagination::bounded_int(raw, 1..=i64::MAX)
                .ok_or_else(|| AppError::validation("contest_id", "must be a positive integer"))?,
        ),
    };
    let page_query = PageQuery {
        limit: query.limit.clone(),
        cursor: query.cursor.clone(),
    };
    // Validate the cursor for this sort before touching the cache.
    let limit = match sort {
        Sort::New => page_query.parse::<(DateTime<Utc>, Uuid)>()?.limit,
        Sort::Top => page_query.parse::<(i32, DateTime<Utc>, Uuid)>()?.limit,
        Sort::Hot => page_query.parse::<(f64, Uuid)>()?.limit,
    };
    let key = format!(
        "city:{city_id}:{}:{}:{limit}:{}",
        contest_id.map(|c| c.to_string()).unwrap_or_default(),
        sort.key(),
        page_query.cursor.as_deref().unwrap_or("")
    );
    let cached = state
        .cache
        .get_or_load(Namespace::Questions, &key, || async {
            city_exists(&state, city_id).await?;
            if let Some(contest_id) = contest_id
                && !contest_in_city(&state, city_id, contest_id).await?
            {
                return Err(AppError::NotFound(format!(
                    "No contest with id {contest_id} in city {city_id}"
                )));
            }
            load_city_page(&state, city_id, contest_id, sort, &page_query).await
        })
        .await?;
    Ok(cached.respond_public(&headers, LIST_CACHE))
}

async fn load_city_page(
    state: &AppState,
    city_id: i64,
    contest_id: Option<i64>,
    sort: Sort,
    page_query: &PageQuery,
) -> AppResult<QuestionPage> {
    let freshness = state.write_tokens.freshness_scope(LISTS_SCOPE).await;
    // A contest's list is its own statement (not `$7 IS NULL OR ...`), so
    // that its plan uses the contest's partial indexes (questions_contest_*),
    // whose keys follow each sort's as the city's do. The contest is one of
    // the city's (checked by the caller), so `city_id` only restates it.
    let base = match contest_id {
        None => format!(
            "SELECT {VIEW_COLUMNS}, q.hot FROM questions q JOIN users u ON u.id = q.author_id
              WHERE q.city_id = $1 AND q.status = 'visible'"
        ),
        Some(_) => format!(
            "SELECT {VIEW_COLUMNS}, q.hot FROM questions q JOIN users u ON u.id = q.author_id
              WHERE q.contest_id = $7 AND q.contest_id IS NOT NULL AND q.city_id = $1
                AND q.status = 'visible'"
        ),
    };
    // One statement per sort; an absent cursor binds NULLs that switch the
    // keyset predicate off. Each ORDER BY matches a partial index.
    let (sql, cursor) = match sort {
        Sort::New => {
            let page: PageRequest<(DateTime<Utc>, Uuid)> = page_query.parse()?;
            let after = page.after.map(|(t, id)| Cursor {
                hot: None,
                score: None,
                t: Some(t),
                id,
            });
            (
                format!(
                    "{base} AND ($2::timestamptz IS NULL OR (q.created_at, q.id) < ($2, $5))
                     ORDER BY q.created_at DESC, q.id DESC LIMIT $6"
                ),
                (after, page.limit),
            )
        }
        Sort::Top => {
            let page: PageRequest<(i32, DateTime<Utc>, Uuid)> = page_query.parse()?;
            let after = page.after.map(|(s, t, id)| Cursor {
                hot: None,
                score: Some(s),
                t: Some(t),
                id,
            });
            (
                format!(
                    "{base} AND ($3::int4 IS NULL OR (q.score, q.created_at, q.id) < ($3, $2, $5))
                     ORDER BY q.score DESC, q.created_at DESC, q.id DESC LIMIT $6"
                ),
                (after, page.limit),
            )
        }
        Sort::Hot => {
            let page: PageRequest<(f64, Uuid)> = page_query.parse()?;
            let after = page.after.map(|(h, id)| Cursor {
                hot: Some(h),
                score: None,
                t: None,
                id,
            });
            (
                format!(
                    "{base} AND ($4::float8 IS NULL OR (q.hot, q.id) < ($4, $5))
                     ORDER BY q.hot DESC, q.id DESC LIMIT $6"
                ),
                (after, page.limit),
            )
        }
    };
    let (after, limit) = cursor;
    let rows: Vec<HotRow> = state
        .db
        .read_consistent(freshness, |pool| {
            let sql = sql.clone();
            async move {
                let query = sqlx::query_as::<_, HotRow>(sqlx::AssertSqlSafe(sql))
                    .bind(city_id)
                    .bind(after.and_then(|c| c.t))
                    .bind(after.and_then(|c| c.score))
                    .bind(after.and_then(|c| c.hot))
                    .bind(after.map(|c| c.id))
                    .bind(limit + 1);
                match contest_id {
                    Some(contest) => query.bind(contest).fetch_all(&pool).await,
                    None => query.fetch_all(&pool).await,
                }
            }
        })
        .await?;
    let (rows, next_cursor) = match sort {
        Sort::New => finish_page(rows, limit, |r| (r.question.created_at, r.question.id)),
        Sort::Top => finish_page(rows, limit, |r| {
            (r.question.score, r.question.created_at, r.question.id)
        }),
        Sort::Hot => finish_page(rows, limit, |r| (r.hot, r.question.id)),
    };
    Ok(QuestionPage {
        items: rows.into_iter().map(|r| r.question).collect(),
        next_cursor,
    })
}

/// The keyset position of the last row of a page, whatever the sort.
#[derive(Clone, Copy)]
struct Cursor {
    hot: Option<f64>,
    score: Option<i32>,
    t: Option<DateTime<Utc>>,
    id: Uuid,
}

#[derive(sqlx::FromRow)]
struct HotRow {
    #[sqlx(flatten)]
    question: QuestionView,
    hot: f64,
}

/// The hottest visible questions across all cities, with keyset pagination
/// on (`hot`, id) (the `questions_popular` index). Public and cached.
#[utoipa::path(get, path = "/questions/popular", tag = "civic",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of questions, hottest first", body = QuestionPage),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn popular_questions(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<PageQuery>,
) -> AppResult<Response> {
    // Validated before the cache is consulted: a bad cursor is never a key.
    let page: PageRequest<(f64, Uuid)> = query.parse()?;
    let key = format!(
        "page:{}:{}",
        page.limit,
        query.cursor.as_deref().unwrap_or("")
    );
    let cached = state
        .cache
        .get_or_load(Namespace::Popular, &key, || async {
            let freshness = state.write_tokens.freshness_scope(LISTS_SCOPE).await;
            // NULL cursor columns switch the keyset predicate off (first page).
            let sql = format!(
                "SELECT {VIEW_COLUMNS}, q.hot FROM questions q JOIN users u ON u.id = q.author_id
                  WHERE q.status = 'visible'
                    AND ($1::float8 IS NULL OR (q.hot, q.id) < ($1, $2))
                  ORDER BY q.hot DESC, q.id DESC LIMIT $3"
            );
            let (after, limit) = (page.after, page.limit);
            let rows: Vec<HotRow> = state
                .db
                .read_consistent(freshness, |pool| {
                    let sql = sql.clone();
                    async move {
                        sqlx::query_as::<_, HotRow>(sqlx::AssertSqlSafe(sql))
                            .bind(after.map(|(hot, _)| hot))
                            .bind(after.map(|(_, id)| id))
                            .bind(limit + 1)
                            .fetch_all(&pool)
                            .await
                    }
                })
                .await?;
            let (rows, next_cursor) = finish_page(rows, limit, |r| (r.hot, r.question.id));
            Ok::<_, AppError>(QuestionPage {
                items: rows.into_iter().map(|r| r.question).collect(),
                next_cursor,
            })
        })
        .await?;
    Ok(cached.respond_public(&headers, LIST_CACHE))
}

/// The similar questions of `GET /questions/similar`: a bounded list (the 10
/// best matches), so `next_cursor` is always null; the envelope is the one
/// every list endpoint uses.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarPage {
    pub items: Vec<SimilarQuestion>,
    /// Always null: the 10 best matches are the whole answer.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SimilarQuery {
    /// The city to search.
    #[param(value_type = i64)]
    pub city_id: String,
    /// The text of a question being written: up to 500 characters, at least
    /// 3 of them not spaces.
    #[param(
        min_length = 3,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub q: String,
}

/// Questions of a city similar to a text (trigram similarity or full-text
/// match), best first, at most 10 (`next_cursor` is always null): lets a
/// client suggest voting instead of re-asking.
#[utoipa::path(get, path = "/questions/similar", tag = "civic",
    params(SimilarQuery),
    responses(
        (status = 200, description = "Up to 10 similar questions, best first (public, cached a few seconds)", body = SimilarPage),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Missing or unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid city id or text", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many searches from this address (RATE_LIMIT_SIMILAR_IP); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn similar_questions(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SimilarQuery>,
) -> AppResult<Response> {
    let mut errors = Vec::new();
    let city_id = query
        .city_id
        .parse::<i64>()
        .map_err(|_| errors.push(FieldError::new("city_id", "must be an integer")))
        .ok();
    let q = query.q.split_whitespace().collect::<Vec<_>>().join(" ");
    let letters = q.chars().filter(|c| !c.is_whitespace()).count();
    if letters < 3 || query.q.chars().count() > 500 || !crate::text::is_single_line(&query.q) {
        errors.push(FieldError::new(
            "q",
            "must be up to 500 characters of text, at least 3 of them not spaces",
        ));
    }
    let (Some(city_id), true) = (city_id, errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    // Clients call this as a resident types: cheap when cached, but each miss
    // is a trigram search, so every caller is limited.
    spend_ip_limit(&state, ip, "similar-ip", state.config.civic.similar_per_ip).await?;
    // Trigram similarity and the English text search both ignore case, so one
    // entry serves every casing of a text.
    let text_key = etag_of(q.to_lowercase().as_bytes());
    let key = format!("similar:{city_id}:{}", text_key.trim_matches('"'));
    let cached = state
        .cache
        .get_or_load(Namespace::Questions, &key, || async {
            city_exists(&state, city_id).await?;
            let items = find_similar(&state, city_id, &q, 10).await?;
            Ok(SimilarPage {
                items,
                next_cursor: None,
            })
        })
        .await?;
    // Not `respond_public`: every search spends the caller's rate limit above,
    // so it must not be answered by the fast path without running this handler.
    Ok(cached.respond(&headers, LIST_CACHE))
}

/// One question, with the caller's vote when signed in. Hidden and removed
/// questions are 404 except to moderators and admins; a merged one answers
/// 308 with `Location` pointing at the question it was merged into (moderators
/// and admins read it as it is).
#[utoipa::path(get, path = "/questions/{id}", tag = "civic",
    params(("id" = Uuid, Path, description = "Question id")),
    responses(
        (status = 200, description = "The question", body = QuestionDetail),
        (status = 308, description = "Merged into another question (see `Location`)", body = MergedQuestion,
            headers(("Location" = String, description = "The question it was merged into"))),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_question(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    AppPath(id): AppPath<Uuid>,
) -> AppResult<Response> {
    let not_found = || AppError::NotFound(format!("No question with id {id}"));
    let created_at = created_at_of(id).ok_or_else(not_found)?;
    let user_id = user.as_ref().map(|u| u.id);
    let freshness = match user_id {
        Some(u) => state.write_tokens.freshness(u).await,
        None => Freshness::Any,
    };
    let sql = format!(
        "SELECT {VIEW_COLUMNS},
                (SELECT value FROM question_votes v WHERE v.question_id = q.id AND v.user_id = $3)
                  AS my_vote
           FROM questions q JOIN users u ON u.id = q.author_id
          WHERE q.created_at = $1 AND q.id = $2"
    );
    let row: Option<DetailRow> = state
        .db
        .read_consistent(freshness, |pool| {
            let sql = sql.clone();
            async move {
                sqlx::query_as::<_, DetailRow>(sqlx::AssertSqlSafe(sql))
                    .bind(created_at)
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(&pool)
                    .await
            }
        })
        .await?;
    let row = row.ok_or_else(not_found)?;
    let question = &row.question;
    if let Some(pointer) = gate_read(
        id,
        &question.status,
        question.merged_into,
        user.as_ref(),
        "",
        None,
    )? {
        return Ok(pointer);
    }
    private_json(&QuestionDetail {
        question: row.question,
        my_vote: row.my_vote,
    })
}

/// What residents get for a merged question: where it went.
#[derive(Debug, Serialize, ToSchema)]
pub struct MergedQuestion {
    pub id: Uuid,
    /// Always `merged`.
    pub status: String,
    /// The question it was merged into (also in `Location`).
    pub merged_into: Uuid,
}

/// Whether the caller reads questions in every moderation status.
pub fn is_moderator(user: Option<&AuthUser>) -> bool {
    user.is_some_and(|u| matches!(u.role, Role::Moderator | Role::Admin))
}

/// Applies [`visibility::for_reader`] to a read of question `id` (or of its
/// sub-resource `suffix`, e.g. `/answers`): `None` to serve it, a 404, or
/// `Some` 308 pointing at the same sub-resource of the merge target, with
/// `page`'s (validated) limit and cursor carried over.
pub fn gate_read(
    id: Uuid,
    status: &str,
    merged_into: Option<Uuid>,
    user: Option<&AuthUser>,
    suffix: &str,
    page: Option<&PageQuery>,
) -> AppResult<Option<Response>> {
    let target = match visibility::for_reader(status, merged_into, is_moderator(user)) {
        Visibility::Shown => return Ok(None),
        Visibility::NotFound => {
            return Err(AppError::NotFound(format!("No question with id {id}")));
        }
        Visibility::MergedInto(target) => target,
    };
    let mut location = format!("/api/v1/questions/{target}{suffix}");
    // Both values were validated (digits; an unpadded base64url cursor), so
    // they need no escaping.
    let params: Vec<String> = page
        .into_iter()
        .flat_map(|p| {
            [
                p.limit.as_deref().map(|l| format!("limit={l}")),
                p.cursor
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .map(|c| format!("cursor={c}")),
            ]
        })
        .flatten()
        .collect();
    if !params.is_empty() {
        location = format!("{location}?{}", params.join("&"));
    }
    let location = HeaderValue::from_str(&location).map_err(|e| AppError::Internal(e.into()))?;
    let mut response = private_json(&MergedQuestion {
        id,
        status: "merged".into(),
        merged_into: target,
    })?;
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(Some(response))
}

#[derive(sqlx::FromRow)]
struct DetailRow {
    #[sqlx(flatten)]
    question: QuestionView,
    my_vote: Option<i16>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// 1 (up) or -1 (down).
    #[schema(schema_with = vote_value_schema)]
    pub value: i16,
}

fn vote_value_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .enum_values(Some([1, -1]))
        .description(Some("1 (up) or -1 (down)"))
        .build()
}

/// Votes on a question (or changes the vote): one vote per user, counts
/// updated in the same transaction. Honors `Idempotency-Key`.
#[utoipa::path(put, path = "/questions/{id}/vote", tag = "civic",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Question id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe",
            min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    request_body = VoteRequest,
    responses(
        (status = 200, description = "The question with its new counts and your vote", body = QuestionDetail),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The question was merged (or, to a moderator, is hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The value is not 1 or -1", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many votes this hour", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_vote(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
    key: Option<IdempotencyKey>,
    AppJson(request): AppJson<VoteRequest>,
) -> AppResult<Response> {
    if request.value != 1 && request.value != -1 {
        return Err(AppError::validation("value", "must be 1 or -1"));
    }
    vote(&state, user, id, key, Some(request.value), "PUT").await
}

/// Withdraws the caller's vote (no vote is not an error).
#[utoipa::path(delete, path = "/questions/{id}/vote", tag = "civic",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Question id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe",
            min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 200, description = "The question with its new counts", body = QuestionDetail),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The question was merged (or, to a moderator, is hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or reused Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many votes this hour", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_vote(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
    key: Option<IdempotencyKey>,
) -> AppResult<Response> {
    vote(&state, user, id, key, None, "DELETE").await
}

async fn vote(
    state: &AppState,
    user: AuthUser,
    id: Uuid,
    key: Option<IdempotencyKey>,
    value: Option<i16>,
    method: &str,
) -> AppResult<Response> {
    let created_at =
        created_at_of(id).ok_or_else(|| AppError::NotFound(format!("No question with id {id}")))?;
    let fingerprint = idempotency::fingerprint(method, &format!("/questions/{id}/vote"), &value)?;
    let guard = key.as_ref().map(|key| Guard {
        user_id: user.id,
        key,
        fingerprint,
    });
    // A retry of a vote that was counted is answered before the limit.
    if let Some(guard) = &guard
        && let Some(replay) = idempotency::replay(state.db.write(), guard).await?
    {
        return Ok(replay);
    }
    spend_user_limit(
        state,
        user.id,
        "votes-user",
        state.config.civic.votes_per_user,
    )
    .await?;
    let voter = user.clone();
    let outcome =
        idempotency::transaction(state.db.write(), guard, StatusCode::OK, async move |tx| {
            apply_vote(tx, id, created_at, &voter, value).await
        })
        .await?;
    if let Idempotent::Done { .. } = &outcome {
        after_write(state, user.id).await;
        // Coalesced: the counts as of ~200 ms from now.
        state
            .live
            .publish_votes(state.db.write().clone(), id, created_at);
    }
    Ok(outcome.into_response())
}

/// Locks question `id`'s row for the rest of the transaction for a write (a
/// vote, a flag, an answer or an edit of one; every write to a question and
/// its votes, flags and answers goes through this lock) and checks that it
/// takes `what`; its score. The answers
/// match the read path: to a resident, a hidden or removed question does not
/// exist (404, not a 409 that would confirm it and name its status); a merged
/// one points at its target. Moderators and admins, who can read every
/// status, are told the status.
pub async fn lock_open_question(
    tx: &mut PgConnection,
    id: Uuid,
    created_at: DateTime<Utc>,
    user: &AuthUser,
    what: &str,
) -> AppResult<i32> {
    let row: Option<(String, i32, Option<Uuid>)> = sqlx::query_as(
        "SELECT status, score, merged_into FROM questions
          WHERE created_at = $1 AND id = $2 FOR UPDATE",
    )
    .bind(created_at)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let not_found = || AppError::NotFound(format!("No question with id {id}"));
    let (status, score, merged_into) = row.ok_or_else(not_found)?;
    match visibility::for_reader(&status, merged_into, is_moderator(Some(user))) {
        Visibility::NotFound => Err(not_found()),
        Visibility::MergedInto(target) => Err(AppError::Conflict(format!(
            "This question was merged into {target}; it takes no {what}."
        ))),
        Visibility::Shown if status == "visible" => Ok(score),
        Visibility::Shown => Err(AppError::Conflict(format!(
            "This question is {status} and takes no {what}."
        ))),
    }
}

/// Sets (Some) or withdraws (None) a user's vote and adjusts the question's
/// counters by the difference, all under the question's row lock.
pub async fn apply_vote(
    tx: &mut PgConnection,
    id: Uuid,
    created_at: DateTime<Utc>,
    user: &AuthUser,
    value: Option<i16>,
) -> AppResult<QuestionDetail> {
    let score = lock_open_question(tx, id, created_at, user, "votes").await?;
    // The counts change by what the caller's previous vote was, which this
    // statement reads under the lock; `hot` (ranking::hot) is computed here
    // for each possible previous vote and the statement picks the one that
    // applies. One round trip: read the old vote, write the new one, adjust
    // the counters and return the question.
    let count = |v: Option<i16>, side: i16| i32::from(v == Some(side));
    let hot_after = |old: Option<i16>| {
        let up = count(value, 1) - count(old, 1);
        let down = count(value, -1) - count(old, -1);
        ranking::hot(i64::from(score + up - down), created_at)
    };
    let question = sqlx::query_as::<_, QuestionView>(sqlx::AssertSqlSafe(format!(
        "WITH old AS (
             SELECT value FROM question_votes WHERE question_id = $2 AND user_id = $3),
         put AS (
             INSERT INTO question_votes (question_id, user_id, value)
             SELECT $2, $3, $4 WHERE $4 IS NOT NULL
             ON CONFLICT (question_id, user_id) DO UPDATE
                SET value = EXCLUDED.value, updated_at = now()),
         gone AS (
             DELETE FROM question_votes
              WHERE $4 IS NULL AND question_id = $2 AND user_id = $3),
         was AS (SELECT (SELECT value FROM old) AS value),
         q AS (
             UPDATE questions
                SET upvotes = upvotes + ($4 IS NOT DISTINCT FROM 1)::int
                                      - (was.value IS NOT DISTINCT FROM 1)::int,
                    downvotes = downvotes + ($4 IS NOT DISTINCT FROM -1)::int
                                          - (was.value IS NOT DISTINCT FROM -1)::int,
                    hot = CASE was.value WHEN 1 THEN $6 WHEN -1 THEN $7 ELSE $5 END
               FROM was
              WHERE questions.created_at = $1 AND questions.id = $2
             RETURNING questions.*)
         SELECT {VIEW_COLUMNS} FROM q JOIN users u ON u.id = q.author_id"
    )))
    .bind(created_at)
    .bind(id)
    .bind(user.id)
    .bind(value)
    .bind(hot_after(None))
    .bind(hot_after(Some(1)))
    .bind(hot_after(Some(-1)))
    .fetch_one(&mut *tx)
    .await?;
    Ok(QuestionDetail {
        question,
        my_vote: value,
    })
}
