//! CivicQ ballots: a city's elections, the contests on each, and the
//! candidate profiles running in them.
//!
//! - Administrators create and edit elections, contests and profiles, link a
//!   profile to the candidate account that speaks for it and set `verified`.
//!   A candidate edits the bio and links of their own profile.
//! - Everyone reads a city's ballot, a contest's candidates and one profile:
//!   public and cached (namespace `ballot`); every write bumps that cache's
//!   generation and records a consistency token for its loaders, so no
//!   loader re-caches data older than the write.
//! - Who may answer and rebut is decided by [`crate::civic::ballot`].

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AuthUser, Role};
use crate::cache::Namespace;
use crate::civic::ballot::{free_text, normalize_links, one_line};
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::{AppJson, AppPath, AppQuery};
use crate::http::pagination::{PageQuery, PageRequest, finish_page};
use crate::http::practice::private_json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(city_ballot))
        .routes(routes!(create_election))
        .routes(routes!(edit_election))
        .routes(routes!(create_contest))
        .routes(routes!(edit_contest))
        .routes(routes!(contest_candidates, create_candidate))
        .routes(routes!(get_candidate, edit_candidate))
}

/// Ballots change when an administrator edits them: shared caches may keep
/// them half a minute.
const CACHE: &str = "public, max-age=30, stale-while-revalidate=30";

/// Consistency-token scope of the ballot cache's loaders.
const BALLOT_SCOPE: &str = "cache:ballot";

/// How far back a ballot reaches: elections of the last 180 days (in the
/// city's time zone) and every later one.
const RECENT_DAYS: i32 = 180;

/// The most elections one ballot lists.
const MAX_ELECTIONS: i64 = 50;

const NAME_MAX: usize = 120;
const TITLE_MAX: usize = 200;
const DESCRIPTION_MAX: usize = 5000;
const BIO_MAX: usize = 2000;

/// An election of a city.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Election {
    pub id: i64,
    pub city_id: i64,
    pub name: String,
    /// The day of the vote (in the city's time zone).
    pub election_date: NaiveDate,
}

/// A contest on an election's ballot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Contest {
    pub id: i64,
    pub election_id: i64,
    /// `office` (candidates run for `seats` seats) or `measure` (a yes/no
    /// question; its profiles are the campaigns for and against it).
    #[schema(pattern = "^(office|measure)$")]
    pub kind: String,
    pub title: String,
    pub description: String,
    /// Seats to fill (`office`); null for a `measure`.
    pub seats: Option<i32>,
    /// Candidate profiles in this contest.
    pub candidate_count: i64,
}

/// An election with its contests, as a ballot lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BallotElection {
    #[serde(flatten)]
    pub election: Election,
    /// The election day is today or later (in the city's time zone).
    pub upcoming: bool,
    /// In the order they were created.
    pub contests: Vec<Contest>,
}

/// A city's ballot: recent and upcoming elections.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ballot {
    pub city_id: i64,
    /// Elections from 180 days ago on, by date (oldest first), at most 50.
    pub elections: Vec<BallotElection>,
}

/// A candidate running in a contest (or, for a measure, a campaign).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct CandidateProfile {
    /// Answers and rebuttals name the profile they were given as.
    pub id: Uuid,
    pub contest_id: i64,
    /// The candidate account that speaks for this profile (answers its
    /// questions), if any.
    pub user_id: Option<Uuid>,
    pub display_name: String,
    pub bio: String,
    /// https URLs (campaign site, social media).
    pub links: Vec<String>,
    /// Checked by an administrator.
    pub verified: bool,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CandidatePage {
    pub items: Vec<CandidateProfile>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// For a field that may be absent (leave as is), null (clear) or a value.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewElection {
    /// 1 to 120 characters on one line.
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// The day of the vote, `YYYY-MM-DD`.
    pub election_date: NaiveDate,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ElectionEdit {
    /// 1 to 120 characters on one line.
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    /// The day of the vote, `YYYY-MM-DD`.
    pub election_date: Option<NaiveDate>,
}

/// A new contest, by `kind`: an `office` has seats, a `measure` none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewContest {
    /// Candidates run for `seats` seats.
    Office {
        /// 1 to 200 characters on one line.
        #[schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        title: String,
        /// Up to 5,000 characters (line breaks allowed).
        #[schema(
            max_length = 5000,
            pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
        )]
        description: Option<String>,
        /// 1 to 1,000.
        #[serde(deserialize_with = "crate::http::extract::integer")]
        #[schema(minimum = 1, maximum = 1000)]
        seats: i32,
    },
    /// A yes/no question on the ballot.
    Measure {
        /// 1 to 200 characters on one line.
        #[schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        title: String,
        /// Up to 5,000 characters (line breaks allowed).
        #[schema(
            max_length = 5000,
            pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
        )]
        description: Option<String>,
    },
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContestEdit {
    /// 1 to 200 characters on one line.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub title: Option<String>,
    /// Up to 5,000 characters (line breaks allowed).
    #[schema(
        max_length = 5000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub description: Option<String>,
    /// 1 to 1,000; only for an `office` (a measure has no seats: 422).
    #[serde(default, deserialize_with = "crate::http::extract::optional_integer")]
    #[schema(minimum = 1, maximum = 1000)]
    pub seats: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCandidate {
    /// 1 to 120 characters on one line.
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub display_name: String,
    /// Up to 2,000 characters (line breaks allowed).
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub bio: Option<String>,
    /// Up to 5 https URLs (duplicates dropped).
    #[serde(default)]
    #[schema(max_items = 5, inline, value_type = Option<Vec<LinkSchema>>)]
    pub links: Option<Vec<String>>,
    /// The account (role candidate) that speaks for this profile; one
    /// profile per account per contest.
    pub user_id: Option<Uuid>,
    /// Checked by an administrator (default false).
    #[serde(default)]
    pub verified: Option<bool>,
}

/// Changes to a profile. A candidate may change only `bio` and `links` of
/// their own profile; administrators change everything.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateEdit {
    /// 1 to 120 characters on one line (administrators only).
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub display_name: Option<String>,
    /// Up to 2,000 characters (line breaks allowed).
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub bio: Option<String>,
    /// Replaces the list: up to 5 https URLs (duplicates dropped).
    #[schema(max_items = 5, inline, value_type = Option<Vec<LinkSchema>>)]
    pub links: Option<Vec<String>>,
    /// Links the profile to this candidate account, or unlinks it (null)
    /// (administrators only).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub user_id: Option<Option<Uuid>>,
    /// Administrators only.
    pub verified: Option<bool>,
}

/// A link (documentation type for the profile's `links`).
#[derive(ToSchema)]
#[schema(
    value_type = String,
    max_length = 300,
    pattern = r"^https://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?([/?#][!-~]*)?$"
)]
pub struct LinkSchema(#[allow(dead_code)] String);

fn field<T>(name: &str, result: Result<T, String>, errors: &mut Vec<FieldError>) -> Option<T> {
    result
        .map_err(|m| errors.push(FieldError::new(name, m)))
        .ok()
}

fn no_city(id: i64) -> AppError {
    AppError::NotFound(format!("No city with id {id}"))
}

fn no_election(id: i64) -> AppError {
    AppError::NotFound(format!("No election with id {id}"))
}

fn no_contest(id: i64) -> AppError {
    AppError::NotFound(format!("No contest with id {id}"))
}

fn no_candidate(id: Uuid) -> AppError {
    AppError::NotFound(format!("No candidate profile with id {id}"))
}

/// A unique-constraint violation named `constraint`, as a 409 with `detail`.
fn conflict_on(e: sqlx::Error, constraint: &str, detail: &str) -> AppError {
    let hit = e.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
    });
    if hit {
        AppError::Conflict(detail.to_owned())
    } else {
        e.into()
    }
}

/// After a ballot write: the writer reads it back at once, and the cached
/// ballots are dropped everywhere; their loaders read only from a replica
/// that has the write.
async fn after_write(state: &AppState, user_id: Uuid) {
    match state.db.current_lsn().await {
        Ok(lsn) => {
            state.write_tokens.record(user_id, lsn).await;
            state.write_tokens.record_scope(BALLOT_SCOPE, lsn).await;
        }
        Err(e) => tracing::warn!(error = %e, "could not read the commit position"),
    }
    state.cache.invalidate(Namespace::Ballot).await;
}

/// After a write to ballot data outside these handlers (an account deletion
/// unlinking profiles): [`after_write`] without a writer to remember.
pub(crate) async fn ballot_changed(state: &AppState) {
    match state.db.current_lsn().await {
        Ok(lsn) => {
            state.write_tokens.record_scope(BALLOT_SCOPE, lsn).await;
        }
        Err(e) => tracing::warn!(error = %e, "could not read the commit position"),
    }
    state.cache.invalidate(Namespace::Ballot).await;
}

fn created<T: Serialize>(value: &T) -> AppResult<Response> {
    let mut response = private_json(value)?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

const ELECTION_COLUMNS: &str = "id, city_id, name, election_date";
const CONTEST_COLUMNS: &str = "c.id, c.election_id, c.kind, c.title, c.description, c.seats, \
     (SELECT count(*) FROM candidate_profiles p WHERE p.contest_id = c.id) AS candidate_count";
const CANDIDATE_COLUMNS: &str =
    "id, contest_id, user_id, display_name, bio, links, verified, updated_at";

/// A city's ballot: its elections from 180 days ago on (in the city's time
/// zone), oldest first, at most 50, each with its contests. Public and
/// cached; an administrator's edit shows within seconds.
#[utoipa::path(get, path = "/cities/{id}/ballot", tag = "civic",
    params(("id" = i64, Path, description = "City id")),
    responses(
        (status = 200, description = "The ballot", body = Ballot),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "The id is not an integer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn city_ballot(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppPath(city_id): AppPath<i64>,
) -> AppResult<Response> {
    let cached = state
        .cache
        .get_or_load(Namespace::Ballot, &format!("city:{city_id}"), || {
            load_ballot(&state, city_id)
        })
        .await?;
    Ok(cached.respond_public(&headers, CACHE))
}

#[derive(sqlx::FromRow)]
struct ElectionRow {
    #[sqlx(flatten)]
    election: Election,
    upcoming: bool,
}

async fn load_ballot(state: &AppState, city_id: i64) -> AppResult<Ballot> {
    let freshness = state.write_tokens.freshness_scope(BALLOT_SCOPE).await;
    let loaded = state
        .db
        .read_consistent(freshness, |pool| async move {
            let today: Option<NaiveDate> = sqlx::query_scalar(
                "SELECT (now() AT TIME ZONE timezone)::date FROM cities WHERE id = $1",
            )
            .bind(city_id)
            .fetch_optional(&pool)
            .await?;
            let Some(today) = today else {
                return Ok(None);
            };
            // The unique key (city_id, election_date, name) serves the range.
            let elections = sqlx::query_as::<_, ElectionRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ELECTION_COLUMNS}, election_date >= $2 AS upcoming
                   FROM elections
                  WHERE city_id = $1 AND election_date >= $2 - $3
                  ORDER BY election_date, id
                  LIMIT $4"
            )))
            .bind(city_id)
            .bind(today)
            .bind(RECENT_DAYS)
            .bind(MAX_ELECTIONS)
            .fetch_all(&pool)
            .await?;
            let ids: Vec<i64> = elections.iter().map(|e| e.election.id).collect();
            let contests = sqlx::query_as::<_, Contest>(sqlx::AssertSqlSafe(format!(
                "SELECT {CONTEST_COLUMNS} FROM contests c
                  WHERE c.election_id = ANY($1)
                  ORDER BY c.election_id, c.id"
            )))
            .bind(&ids)
            .fetch_all(&pool)
            .await?;
            Ok(Some((elections, contests)))
        })
        .await?;
    let (elections, contests) = loaded.ok_or_else(|| no_city(city_id))?;
    let elections = elections
        .into_iter()
        .map(|row| BallotElection {
            contests: contests
                .iter()
                .filter(|c| c.election_id == row.election.id)
                .cloned()
                .collect(),
            election: row.election,
            upcoming: row.upcoming,
        })
        .collect();
    Ok(Ballot { city_id, elections })
}

/// Adds an election to a city's ballot (role admin).
#[utoipa::path(post, path = "/cities/{id}/elections", tag = "civic",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "City id")),
    request_body = NewElection,
    responses(
        (status = 201, description = "The election", body = Election),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The city already has an election of that name on that day", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or date", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_election(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(city_id): AppPath<i64>,
    AppJson(request): AppJson<NewElection>,
) -> AppResult<Response> {
    user.require(&[Role::Admin])?;
    let name = one_line(&request.name, NAME_MAX).map_err(|m| AppError::validation("name", m))?;
    let mut tx = state.db.write().begin().await?;
    let city: Option<i64> = sqlx::query_scalar("SELECT id FROM cities WHERE id = $1")
        .bind(city_id)
        .fetch_optional(&mut *tx)
        .await?;
    city.ok_or_else(|| no_city(city_id))?;
    let election = sqlx::query_as::<_, Election>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO elections (city_id, name, election_date) VALUES ($1, $2, $3)
         ON CONFLICT ON CONSTRAINT elections_city_date_name_key DO NOTHING
         RETURNING {ELECTION_COLUMNS}"
    )))
    .bind(city_id)
    .bind(&name)
    .bind(request.election_date)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        AppError::Conflict("This city already has an election of that name on that day.".into())
    })?;
    tx.commit().await?;
    after_write(&state, user.id).await;
    created(&election)
}

/// Renames or re-dates an election (role admin). Its city never changes.
#[utoipa::path(patch, path = "/elections/{id}", tag = "civic",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Election id")),
    request_body = ElectionEdit,
    responses(
        (status = 200, description = "The election", body = Election),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such election", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The city already has an election of that name on that day", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or date", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn edit_election(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<i64>,
    AppJson(request): AppJson<ElectionEdit>,
) -> AppResult<Response> {
    user.require(&[Role::Admin])?;
    let name = request
        .name
        .as_deref()
        .map(|n| one_line(n, NAME_MAX))
        .transpose()
        .map_err(|m| AppError::validation("name", m))?;
    let mut tx = state.db.write().begin().await?;
    let election = sqlx::query_as::<_, Election>(sqlx::AssertSqlSafe(format!(
        "UPDATE elections
            SET name = coalesce($2, name), election_date = coalesce($3, election_date),
                updated_at = now()
          WHERE id = $1
          RETURNING {ELECTION_COLUMNS}"
    )))
    .bind(id)
    .bind(name)
    .bind(request.election_date)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| {
        conflict_on(
            e,
            "elections_city_date_name_key",
            "This city already has an election of that name on that day.",
        )
    })?
    .ok_or_else(|| no_election(id))?;
    tx.commit().await?;
    after_write(&state, user.id).await;
    private_json(&election)
}

/// The contest `id` (inside a transaction or on any connection).
async fn load_contest(conn: &mut PgConnection, id: i64) -> Result<Option<Contest>, sqlx::Error> {
    sqlx::query_as::<_, Contest>(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTEST_COLUMNS} FROM contests c WHERE c.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

const CONTEST_TAKEN: &str = "This election already has a contest with that title.";

/// Adds a contest to an election (role admin): an `office` with its number
/// of seats, or a `measure`.
#[utoipa::path(post, path = "/elections/{id}/contests", tag = "civic",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Election id")),
    request_body = NewContest,
    responses(
        (status = 201, description = "The contest", body = Contest),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such election", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The election already has a contest with that title", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid kind, title, description or seats", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_contest(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(election_id): AppPath<i64>,
    AppJson(request): AppJson<NewContest>,
) -> AppResult<Response> {
    user.require(&[Role::Admin])?;
    let (kind, title, description, seats) = match request {
        NewContest::Office {
            title,
            description,
            seats,
        } => ("office", title, description, Some(seats)),
        NewContest::Measure { title, description } => ("measure", title, description, None),
    };
    let mut errors = Vec::new();
    let title = field("title", one_line(&title, TITLE_MAX), &mut errors);
    let description = field(
        "description",
        free_text(description.as_deref().unwrap_or(""), DESCRIPTION_MAX),
        &mut errors,
    );
    if seats.is_some_and(|s| !(1..=1000).contains(&s)) {
        errors.push(FieldError::new("seats", "must be from 1 to 1000"));
    }
    let (Some(title), Some(description), true) = (title, description, errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    let mut tx = state.db.write().begin().await?;
    let election: Option<i64> = sqlx::query_scalar("SELECT id FROM elections WHERE id = $1")
        .bind(election_id)
        .fetch_optional(&mut *tx)
        .await?;
    election.ok_or_else(|| no_election(election_id))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO contests (election_id, kind, title, description, seats)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ON CONSTRAINT contests_election_title_key DO NOTHING
         RETURNING id",
    )
    .bind(election_id)
    .bind(kind)
    .bind(&title)
    .bind(&description)
    .bind(seats)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| AppError::Conflict(CONTEST_TAKEN.into()))?;
    let contest = load_contest(&mut tx, id)
        .await?
        .ok_or_else(|| no_contest(id))?;
    tx.commit().await?;
    after_write(&state, user.id).await;
    created(&contest)
}

/// Edits a contest's title, description or seats (role admin). Its kind and
/// election never change.
#[utoipa::path(patch, path = "/contests/{id}", tag = "civic",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Contest id")),
    request_body = ContestEdit,
    responses(
        (status = 200, description = "The contest", body = Contest),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such contest", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The election already has a contest with that title", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid title, description or seats (a measure has no seats)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn edit_contest(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<i64>,
    AppJson(request): AppJson<ContestEdit>,
) -> AppResult<Response> {
    user.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let title = request
        .title
        .as_deref()
        .and_then(|t| field("title", one_line(t, TITLE_MAX), &mut errors));
    let description = request
        .description
        .as_deref()
        .and_then(|d| field("description", free_text(d, DESCRIPTION_MAX), &mut errors));
    if request.seats.is_some_and(|s| !(1..=1000).contains(&s)) {
        errors.push(FieldError::new("seats", "must be from 1 to 1000"));
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let mut tx = state.db.write().begin().await?;
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM contests WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let kind = kind.ok_or_else(|| no_contest(id))?;
    if kind == "measure" && request.seats.is_some() {
        return Err(AppError::validation("seats", "a measure has no seats"));
    }
    sqlx::query(
        "UPDATE contests
            SET title = coalesce($2, title), description = coalesce($3, description),
                seats = coalesce($4, seats), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(title)
    .bind(description)
    .bind(request.seats)
    .execute(&mut *tx)
    .await
    .map_err(|e| conflict_on(e, "contests_election_title_key", CONTEST_TAKEN))?;
    let contest = load_contest(&mut tx, id)
        .await?
        .ok_or_else(|| no_contest(id))?;
    tx.commit().await?;
    after_write(&state, user.id).await;
    private_json(&contest)
}

/// A contest's candidate profiles by name, with keyset pagination on
/// (`display_name`, id). Public and cached.
#[utoipa::path(get, path = "/contests/{id}/candidates", tag = "civic",
    params(("id" = i64, Path, description = "Contest id"), PageQuery),
    responses(
        (status = 200, description = "A page of candidate profiles", body = CandidatePage),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "The id is not an integer, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such contest", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn contest_candidates(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppPath(contest_id): AppPath<i64>,
    AppQuery(query): AppQuery<PageQuery>,
) -> AppResult<Response> {
    // Validated before the cache is consulted: a bad cursor is never a key.
    let page: PageRequest<(String, Uuid)> = query.parse()?;
    let key = format!(
        "contest:{contest_id}:{}:{}",
        page.limit,
        query.cursor.as_deref().unwrap_or("")
    );
    let cached = state
        .cache
        .get_or_load(Namespace::Ballot, &key, || {
            load_candidates(&state, contest_id, page)
        })
        .await?;
    Ok(cached.respond_public(&headers, CACHE))
}

async fn load_candidates(
    state: &AppState,
    contest_id: i64,
    page: PageRequest<(String, Uuid)>,
) -> AppResult<CandidatePage> {
    let freshness = state.write_tokens.freshness_scope(BALLOT_SCOPE).await;
    let limit = page.limit;
    let (found, rows) = state
        .db
        .read_consistent(freshness, |pool| {
            let after = page.after.clone();
            async move {
                let found: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM contests WHERE id = $1)")
                        .bind(contest_id)
                        .fetch_one(&pool)
                        .await?;
                // NULL cursor columns switch the keyset predicate off (first
                // page); candidate_profiles_contest_name serves the order.
                let rows = sqlx::query_as::<_, CandidateProfile>(sqlx::AssertSqlSafe(format!(
                    "SELECT {CANDIDATE_COLUMNS} FROM candidate_profiles
                      WHERE contest_id = $1
                        AND ($2::text IS NULL OR (display_name, id) > ($2, $3))
                      ORDER BY display_name, id LIMIT $4"
                )))
                .bind(contest_id)
                .bind(after.as_ref().map(|(name, _)| name.clone()))
                .bind(after.as_ref().map(|(_, id)| *id))
                .bind(limit + 1)
                .fetch_all(&pool)
                .await?;
                Ok((found, rows))
            }
        })
        .await?;
    if !found {
        return Err(no_contest(contest_id));
    }
    let (items, next_cursor) = finish_page(rows, limit, |c| (c.display_name.clone(), c.id));
    Ok(CandidatePage { items, next_cursor })
}

/// The account `user_id` if it may speak for a profile: it exists, is not
/// being deleted, and has the role candidate. Share-locks it, so a deletion
/// of the account waits until the link is written (and then unlinks it).
async fn check_candidate_account(tx: &mut PgConnection, user_id: Uuid) -> AppResult<()> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM users WHERE id = $1 AND deleting_since IS NULL FOR SHARE",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    match role.as_deref() {
        None => Err(AppError::NotFound(format!("No user with id {user_id}"))),
        Some("candidate") => Ok(()),
        // The account's current role, not the request, is in the way (a
        // promotion makes the same request succeed): a conflict.
        Some(role) => Err(AppError::Conflict(format!(
            "User {user_id} has the role {role}; only an account with the role candidate \
             speaks for a profile."
        ))),
    }
}

const PROFILE_TAKEN: &str = "This account already speaks for a profile in this contest.";

/// Adds a candidate profile to a contest (role admin), optionally linked to
/// the candidate account that speaks for it (one profile per account per
/// contest).
#[utoipa::path(post, path = "/contests/{id}/candidates", tag = "civic",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Contest id")),
    request_body = NewCandidate,
    responses(
        (status = 201, description = "The profile", body = CandidateProfile),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such contest, or no such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account already has a profile in this contest, or is not a candidate's", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, bio or links", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_candidate(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(contest_id): AppPath<i64>,
    AppJson(request): AppJson<NewCandidate>,
) -> AppResult<Response> {
    user.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let name = field(
        "display_name",
        one_line(&request.display_name, NAME_MAX),
        &mut errors,
    );
    let bio = field(
        "bio",
        free_text(request.bio.as_deref().unwrap_or(""), BIO_MAX),
        &mut errors,
    );
    let links = field(
        "links",
        normalize_links(request.links.as_deref().unwrap_or(&[])),
        &mut errors,
    );
    let (Some(name), Some(bio), Some(links)) = (name, bio, links) else {
        return Err(AppError::Validation(errors));
    };
    let mut tx = state.db.write().begin().await?;
    let contest: Option<i64> = sqlx::query_scalar("SELECT id FROM contests WHERE id = $1")
        .bind(contest_id)
        .fetch_optional(&mut *tx)
        .await?;
    contest.ok_or_else(|| no_contest(contest_id))?;
    if let Some(account) = request.user_id {
        check_candidate_account(&mut tx, account).await?;
    }
    let profile = sqlx::query_as::<_, CandidateProfile>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO candidate_profiles (id, contest_id, user_id, display_name, bio, links, verified)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT ON CONSTRAINT candidate_profiles_one_per_user DO NOTHING
         RETURNING {CANDIDATE_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(contest_id)
    .bind(request.user_id)
    .bind(&name)
    .bind(&bio)
    .bind(&links)
    .bind(request.verified.unwrap_or(false))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| AppError::Conflict(PROFILE_TAKEN.into()))?;
    tx.commit().await?;
    after_write(&state, user.id).await;
    created(&profile)
}

/// One candidate profile. Public and cached.
#[utoipa::path(get, path = "/candidates/{id}", tag = "civic",
    params(("id" = Uuid, Path, description = "Candidate profile id")),
    responses(
        (status = 200, description = "The profile", body = CandidateProfile),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_candidate(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
) -> AppResult<Response> {
    let cached = state
        .cache
        .get_or_load(Namespace::Ballot, &format!("candidate:{id}"), || async {
            let freshness = state.write_tokens.freshness_scope(BALLOT_SCOPE).await;
            state
                .db
                .read_consistent(freshness, |pool| async move {
                    sqlx::query_as::<_, CandidateProfile>(sqlx::AssertSqlSafe(format!(
                        "SELECT {CANDIDATE_COLUMNS} FROM candidate_profiles WHERE id = $1"
                    )))
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
                })
                .await?
                .ok_or_else(|| no_candidate(id))
        })
        .await?;
    Ok(cached.respond_public(&headers, CACHE))
}

/// Edits a candidate profile. Administrators change anything (and link,
/// unlink or verify it); the candidate whose account the profile is linked
/// to changes its `bio` and `links` only.
#[utoipa::path(patch, path = "/candidates/{id}", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Candidate profile id")),
    request_body = CandidateEdit,
    responses(
        (status = 200, description = "The profile", body = CandidateProfile),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither an admin nor this profile's candidate, or a candidate changing more than bio and links", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such profile, or no such user to link", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account to link already has a profile in this contest, or is not a candidate's", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, bio or links", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn edit_candidate(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<CandidateEdit>,
) -> AppResult<Response> {
    user.require(&[Role::Admin, Role::Candidate])?;
    let mut errors = Vec::new();
    let name = request
        .display_name
        .as_deref()
        .and_then(|n| field("display_name", one_line(n, NAME_MAX), &mut errors));
    let bio = request
        .bio
        .as_deref()
        .and_then(|b| field("bio", free_text(b, BIO_MAX), &mut errors));
    let links = request
        .links
        .as_deref()
        .and_then(|l| field("links", normalize_links(l), &mut errors));
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let mut tx = state.db.write().begin().await?;
    let owner: Option<Option<Uuid>> =
        sqlx::query_scalar("SELECT user_id FROM candidate_profiles WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let owner = owner.ok_or_else(|| no_candidate(id))?;
    if user.role != Role::Admin {
        if owner != Some(user.id) {
            return Err(AppError::Forbidden(
                "Only administrators and this profile's own candidate edit it.".into(),
            ));
        }
        if request.display_name.is_some() || request.user_id.is_some() || request.verified.is_some()
        {
            return Err(AppError::Forbidden(
                "A candidate edits only the bio and links of their profile; the name, the \
                 account link and verification are set by administrators."
                    .into(),
            ));
        }
    }
    if let Some(Some(account)) = request.user_id {
        check_candidate_account(&mut tx, account).await?;
    }
    let profile = sqlx::query_as::<_, CandidateProfile>(sqlx::AssertSqlSafe(format!(
        "UPDATE candidate_profiles
            SET display_name = coalesce($2, display_name), bio = coalesce($3, bio),
                links = coalesce($4, links),
                user_id = CASE WHEN $5 THEN $6 ELSE user_id END,
                verified = coalesce($7, verified), updated_at = now()
          WHERE id = $1
          RETURNING {CANDIDATE_COLUMNS}"
    )))
    .bind(id)
    .bind(name)
    .bind(bio)
    .bind(links)
    .bind(request.user_id.is_some())
    .bind(request.user_id.flatten())
    .bind(request.verified)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| conflict_on(e, "candidate_profiles_one_per_user", PROFILE_TAKEN))?;
    tx.commit().await?;
    after_write(&state, user.id).await;
    private_json(&profile)
}
