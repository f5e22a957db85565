//! `/api/v1/exercises`: the subjunctive-practice exercise bank, filtered and
//! paged by the database. Public and cached (L1 + Redis, ETags).
//!
//! A response never contains what would give the answer away: no answer, no
//! accepted forms, no explanation (those come back with an attempt's verdict),
//! and for the choice types (`mood_choice`, `trigger_category`) not even the
//! tense or trigger of the right choice, nor the tags that name them.
//!
//! Filters act only on what a response shows: `tense` and `trigger` match the
//! exercises that show them (never a choice type), and combined with a choice
//! `type` they are a 422, since they would select exactly the items whose
//! answer they name.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::cache::Namespace;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::{AppPath, AppQuery};
use crate::http::pagination::{PageQuery, PageRequest, bounded_int, finish_page};
use crate::practice::bank::ExerciseType;
use crate::spanish::{self, Tense, triggers::TriggerCategory};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_exercises))
        .routes(routes!(get_exercise))
}

/// The bank changes only when it is re-seeded (a deploy).
const CACHE: &str = "public, max-age=300, stale-while-revalidate=60";

/// Part of every cache key of this module. Bump it when what a key maps to
/// changes (the representation, the filters' meaning, the seeded bank), so a
/// new version never serves what an older one left in Redis (the bank is
/// re-seeded without invalidating the cache). v2: filters act only on what
/// is shown; choice difficulties and distractors no longer depend on the
/// answer.
const KEY_VERSION: &str = "v2";

/// Filters for `GET /exercises`; all optional, combined with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExerciseQuery {
    /// `conjugation`, `mood_choice`, `trigger_category` or `sequence_of_tenses`.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<String>,
        pattern = "^(conjugation|mood_choice|trigger_category|sequence_of_tenses)$")]
    pub kind: Option<String>,
    /// A tense key, e.g. `present_subjunctive`. Matches only exercises that
    /// show their tense: for the choice types the tense is the answer, so it is
    /// a 422 with `type=mood_choice` or `type=trigger_category`.
    #[param(value_type = Option<String>,
        pattern = "^(present_indicative|preterite_indicative|imperfect_indicative|present_subjunctive|imperfect_subjunctive_ra|imperfect_subjunctive_se|present_perfect_subjunctive|pluperfect_subjunctive_ra|pluperfect_subjunctive)$")]
    pub tense: Option<String>,
    /// A trigger category: `wish`, `emotion`, `impersonal`, `recommendation`,
    /// `doubt_denial`, `ojala`, `adverbial_conjunction`. Matches only exercises
    /// that show their trigger (not the choice types: a 422 with one of them).
    #[param(value_type = Option<String>,
        pattern = "^(wish|emotion|impersonal|recommendation|doubt_denial|ojala|adverbial_conjunction)$")]
    pub trigger: Option<String>,
    /// 1 (easiest) to 5.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 5)]
    pub difficulty: Option<String>,
    /// The verb practised, as an infinitive (`tener`); the same rule as
    /// `/verbs/{infinitive}/conjugations`.
    #[param(
        min_length = 2,
        max_length = 30,
        pattern = r"^(ir|ser|ver|dar|[a-zñíúü]*[aeiouíúü][a-zñíúü]*(ar|er|ir)|[a-zñíúü]*[eo]ír)$"
    )]
    pub verb: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    /// Opaque: only a value this list returned is valid.
    #[param(max_length = 512, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// Validated filters.
#[derive(Debug, Default)]
struct Filters {
    kind: Option<ExerciseType>,
    tense: Option<Tense>,
    trigger: Option<TriggerCategory>,
    difficulty: Option<i16>,
    verb: Option<String>,
}

impl ExerciseQuery {
    fn filters(&self) -> Result<Filters, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut filters = Filters::default();
        if let Some(raw) = &self.kind {
            filters.kind = ExerciseType::from_key(raw);
            if filters.kind.is_none() {
                errors.push(FieldError::new(
                    "type",
                    "must be conjugation, mood_choice, trigger_category or sequence_of_tenses",
                ));
            }
        }
        if let Some(raw) = &self.tense {
            filters.tense = Tense::from_key(raw);
            if filters.tense.is_none() {
                errors.push(FieldError::new("tense", "is not a known tense key"));
            }
        }
        if let Some(raw) = &self.trigger {
            filters.trigger = TriggerCategory::from_key(raw);
            if filters.trigger.is_none() {
                errors.push(FieldError::new(
                    "trigger",
                    "is not a known trigger category",
                ));
            }
        }
        if let Some(raw) = &self.difficulty {
            filters.difficulty = bounded_int(raw, 1..=5).and_then(|d| i16::try_from(d).ok());
            if filters.difficulty.is_none() {
                errors.push(FieldError::new(
                    "difficulty",
                    "must be an integer from 1 to 5",
                ));
            }
        }
        if let Some(raw) = &self.verb {
            match spanish::validate_infinitive(raw) {
                Ok(verb) => filters.verb = Some(verb),
                Err(e) => errors.push(FieldError::new(
                    "verb",
                    format!("is not a Spanish infinitive: {}", e.reason),
                )),
            }
        }
        // A choice exercise hides its tense and trigger because they give the
        // answer away; a filter on them would select exactly the items whose
        // answer it names.
        if let Some(kind) = filters.kind.filter(|k| !k.is_free_text()) {
            for (field, given) in [
                ("tense", filters.tense.is_some()),
                ("trigger", filters.trigger.is_some()),
            ] {
                if given {
                    errors.push(FieldError::new(
                        field,
                        format!(
                            "cannot be combined with type={}: a {} exercise does not show its \
                             {field}, which would give the answer away",
                            kind.key(),
                            kind.key()
                        ),
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(filters)
        } else {
            Err(errors)
        }
    }
}

/// The keys of the exercise types that show their tense and trigger (the
/// free-text ones); only they can match a `tense` or `trigger` filter.
fn types_showing_tense_and_trigger() -> Vec<&'static str> {
    ExerciseType::ALL
        .into_iter()
        .filter(|k| k.is_free_text())
        .map(ExerciseType::key)
        .collect()
}

impl Filters {
    /// A canonical cache key: the same filters always give the same key.
    fn cache_key(&self, limit: i64, cursor: Option<&str>) -> String {
        format!(
            "{KEY_VERSION}:list:{}:{}:{}:{}:{}:{limit}:{}",
            self.kind.map_or("", ExerciseType::key),
            self.tense.map_or("", Tense::key),
            self.trigger.map_or("", TriggerCategory::key),
            self.difficulty.map_or(String::new(), |d| d.to_string()),
            self.verb.as_deref().unwrap_or(""),
            cursor.unwrap_or(""),
        )
    }
}

/// An exercise as learners see it: everything needed to answer, nothing that
/// gives the answer away.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExerciseView {
    pub id: i64,
    /// Stable across re-seeding and environments.
    pub slug: String,
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    /// The Spanish sentence, with `___` where the answer goes.
    pub prompt: String,
    pub instructions: String,
    /// The verb practised.
    pub verb: String,
    pub person: String,
    /// The tense asked for; null for the choice types (it would reveal the answer).
    pub tense: Option<String>,
    /// What triggers the subjunctive; null for the choice types (and for
    /// exercises without a trigger).
    pub trigger: Option<String>,
    /// 1 (easiest) to 5.
    pub difficulty: i16,
    pub tags: Vec<String>,
    /// The options, for `mood_choice` and `trigger_category`; empty otherwise.
    pub choices: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExercisePage {
    pub items: Vec<ExerciseView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The public columns of an exercise row.
#[derive(sqlx::FromRow)]
pub struct ExerciseRow {
    id: i64,
    slug: String,
    kind: String,
    prompt: String,
    instructions: String,
    infinitive: String,
    person: String,
    tense: String,
    trigger: Option<String>,
    difficulty: i16,
    tags: Vec<String>,
    choices: Vec<String>,
}

impl ExerciseRow {
    pub fn id(&self) -> i64 {
        self.id
    }
}

/// The public columns only: the answer columns are never even read here.
const COLUMNS: &str = "id, slug, kind, prompt, instructions, infinitive, person, tense, trigger, \
                       difficulty, tags, choices";

impl From<ExerciseRow> for ExerciseView {
    fn from(row: ExerciseRow) -> Self {
        // Unknown kinds are treated as choice types: show less, not more.
        let choice = ExerciseType::from_key(&row.kind).is_none_or(|k| !k.is_free_text());
        let (tense, trigger, tags) = if choice {
            let tags = row
                .tags
                .into_iter()
                // Only tags that cannot reveal the right choice (tense, mood,
                // trigger and context tags could).
                .filter(|t| {
                    ["class:", "person:", "frame:"]
                        .iter()
                        .any(|p| t.starts_with(p))
                })
                .collect();
            (None, None, tags)
        } else {
            (Some(row.tense), row.trigger, row.tags)
        };
        Self {
            id: row.id,
            slug: row.slug,
            kind: row.kind,
            prompt: row.prompt,
            instructions: row.instructions,
            verb: row.infinitive,
            person: row.person,
            tense,
            trigger,
            difficulty: row.difficulty,
            tags,
            choices: row.choices,
        }
    }
}

/// Lists exercises by id, filtered by type, tense, trigger, difficulty and
/// verb, with keyset pagination. Filters match only what the items show:
/// `tense` and `trigger` never match a choice exercise (they would name its
/// answer) and are a 422 combined with a choice `type`. Public and cacheable;
/// served from the cache or a read replica.
#[utoipa::path(get, path = "/exercises", tag = "exercises",
    params(ExerciseQuery),
    responses(
        (status = 200, description = "A page of exercises", body = ExercisePage),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed or unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, `limit` or `cursor`, or `tense`/`trigger` combined with a choice `type`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_exercises(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<ExerciseQuery>,
) -> AppResult<Response> {
    let page_query = PageQuery {
        limit: query.limit.clone(),
        cursor: query.cursor.clone(),
    };
    // Report every invalid parameter at once.
    let (filters, page) = match (query.filters(), page_query.parse::<i64>()) {
        (Ok(filters), Ok(page)) => (filters, page),
        (filters, page) => {
            let mut errors = filters.err().unwrap_or_default();
            match page.err() {
                Some(AppError::Validation(more)) => errors.extend(more),
                Some(other) => return Err(other),
                None => {}
            }
            return Err(AppError::Validation(errors));
        }
    };
    let key = filters.cache_key(page.limit, page_query.cursor.as_deref());
    let cached = state
        .cache
        .get_or_load(Namespace::Exercises, &key, || {
            load_page(&state, filters, page)
        })
        .await?;
    Ok(cached.respond_public(&headers, CACHE))
}

async fn load_page(
    state: &AppState,
    filters: Filters,
    page: PageRequest<i64>,
) -> AppResult<ExercisePage> {
    // One row more than asked tells whether another page exists.
    let fetch = page.limit + 1;
    let rows = state
        .db
        .read(|pool| {
            let mut qb = QueryBuilder::<Postgres>::new(format!(
                "SELECT {COLUMNS} FROM exercises WHERE true"
            ));
            if let Some(kind) = filters.kind {
                qb.push(" AND kind = ").push_bind(kind.key());
            }
            if filters.tense.is_some() || filters.trigger.is_some() {
                qb.push(" AND kind = ANY(")
                    .push_bind(types_showing_tense_and_trigger())
                    .push(")");
            }
            if let Some(tense) = filters.tense {
                qb.push(" AND tense = ").push_bind(tense.key());
            }
            if let Some(trigger) = filters.trigger {
                qb.push(" AND trigger = ").push_bind(trigger.key());
            }
            if let Some(difficulty) = filters.difficulty {
                qb.push(" AND difficulty = ").push_bind(difficulty);
            }
            if let Some(verb) = &filters.verb {
                qb.push(" AND infinitive = ").push_bind(verb.clone());
            }
            if let Some(after) = page.after {
                qb.push(" AND id > ").push_bind(after);
            }
            qb.push(" ORDER BY id LIMIT ").push_bind(fetch);
            async move { qb.build_query_as::<ExerciseRow>().fetch_all(&pool).await }
        })
        .await?;
    let (rows, next_cursor) = finish_page(rows, page.limit, |r| r.id);
    Ok(ExercisePage {
        items: rows.into_iter().map(ExerciseView::from).collect(),
        next_cursor,
    })
}

/// One exercise, without its answer. Public and cacheable.
#[utoipa::path(get, path = "/exercises/{id}", tag = "exercises",
    params(("id" = i64, Path, description = "Exercise id")),
    responses(
        (status = 200, description = "The exercise", body = ExerciseView),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "The id is not an integer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such exercise", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_exercise(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppPath(id): AppPath<i64>,
) -> AppResult<Response> {
    let cached = state
        .cache
        .get_or_load(
            Namespace::Exercises,
            &format!("{KEY_VERSION}:id:{id}"),
            || async {
                let row = state
                    .db
                    .read(|pool| async move {
                        sqlx::query_as::<_, ExerciseRow>(
                        "SELECT id, slug, kind, prompt, instructions, infinitive, person, tense,
                                trigger, difficulty, tags, choices
                           FROM exercises
                          WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
                    })
                    .await?
                    .ok_or_else(|| AppError::NotFound(format!("No exercise with id {id}")))?;
                Ok(ExerciseView::from(row))
            },
        )
        .await?;
    Ok(cached.respond_public(&headers, CACHE))
}
