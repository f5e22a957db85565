//! `/api/v1/verbs`: the lexicon and the conjugation of any Spanish infinitive.
//! Everything here is computed by the pure engine in `crate::spanish` — no
//! database — and is the same for everyone, so responses are publicly
//! cacheable with ETags.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::cache::Namespace;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::{AppPath, AppQuery};
use crate::http::pagination::{PageQuery, PageRequest, finish_page};
use crate::spanish;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_verbs))
        .routes(routes!(get_conjugations))
}

/// The lexicon changes only with a deploy; conjugations never change.
const LIST_CACHE: &str = "public, max-age=3600, stale-while-revalidate=600";
const CONJUGATION_CACHE: &str = "public, max-age=86400, stale-while-revalidate=3600";
const SEARCH_MAX_CHARS: usize = 50;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerbQuery {
    /// Start of an infinitive, or part of its English gloss (case-insensitive).
    #[param(max_length = 50, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub search: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    /// Opaque: only a value this list returned is valid.
    #[param(max_length = 512, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerbSummary {
    pub infinitive: String,
    pub english: String,
    /// No change of sound from its model verb (spelling-only changes count as regular).
    pub regular: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerbPage {
    pub items: Vec<VerbSummary>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Lists the lexicon alphabetically, optionally filtered, with keyset pagination.
#[utoipa::path(get, path = "/verbs", tag = "verbs",
    params(VerbQuery),
    responses(
        (status = 200, description = "A page of verbs", body = VerbPage),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed or unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `search`, `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_verbs(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<VerbQuery>,
) -> AppResult<Response> {
    let page_query = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let page = page_query.parse::<String>()?;
    let search = query.search.unwrap_or_default();
    if search.chars().count() > SEARCH_MAX_CHARS {
        return Err(AppError::validation(
            "search",
            "must be at most 50 characters",
        ));
    }
    let key = format!(
        "list:{}:{}:{search}",
        page.limit,
        page_query.cursor.as_deref().unwrap_or("")
    );
    let cached = state
        .cache
        .get_or_load(Namespace::Verbs, &key, || async move {
            Ok(verb_page(&search, page))
        })
        .await?;
    Ok(cached.respond_public(&headers, LIST_CACHE))
}

fn verb_page(search: &str, page: PageRequest<String>) -> VerbPage {
    let limit = usize::try_from(page.limit).unwrap_or(0);
    let entries = spanish::lexicon::page(search, page.after.as_deref(), limit + 1);
    let (entries, next_cursor) = finish_page(entries, page.limit, |e| e.infinitive.to_owned());
    let items = entries
        .into_iter()
        .map(|entry| VerbSummary {
            infinitive: entry.infinitive.to_owned(),
            english: entry.english.to_owned(),
            regular: spanish::conjugate(entry.infinitive).is_ok_and(|c| c.regular),
        })
        .collect();
    VerbPage { items, next_cursor }
}

/// The six persons of one tense.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the response shape produced by `spanish::Conjugation`
pub struct PersonForms {
    yo: String,
    tu: String,
    el: String,
    nosotros: String,
    vosotros: String,
    ellos: String,
}

/// Every tense the practice product drills.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TenseTable {
    present_indicative: PersonForms,
    preterite_indicative: PersonForms,
    imperfect_indicative: PersonForms,
    present_subjunctive: PersonForms,
    imperfect_subjunctive_ra: PersonForms,
    imperfect_subjunctive_se: PersonForms,
    present_perfect_subjunctive: PersonForms,
    pluperfect_subjunctive_ra: PersonForms,
}

/// A verb's conjugation (the shape of `spanish::Conjugation` on the wire).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConjugationDoc {
    infinitive: String,
    /// In the lexicon; false when conjugated purely by rule (e.g. `bloguear`).
    known: bool,
    english: Option<String>,
    regular: bool,
    participle: String,
    gerund: String,
    tenses: TenseTable,
}

/// Conjugates any Spanish infinitive: lexicon verbs with their glosses, any
/// other well-formed infinitive by rule (`known: false`). Not an infinitive → 422.
#[utoipa::path(get, path = "/verbs/{infinitive}/conjugations", tag = "verbs",
    params(("infinitive" = String, Path,
        description = "A Spanish infinitive, e.g. `tener`. The pattern is the rule the server \
            applies to the canonical (lower-case, composed) form: Spanish letters ending in -ar, \
            -er or -ir with a vowel before the ending and no á, é or ó in the stem, or -ír after \
            e or o (reír, oír), or one of ir, ser, ver, dar. The server also accepts capitals and \
            decomposed accents.",
        min_length = 2, max_length = 30,
        pattern = r"^(ir|ser|ver|dar|[a-zñíúü]*[aeiouíúü][a-zñíúü]*(ar|er|ir)|[a-zñíúü]*[eo]ír)$")),
    responses(
        (status = 200, description = "The conjugation", body = ConjugationDoc),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 422, description = "Not a Spanish infinitive", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_conjugations(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppPath(infinitive): AppPath<String>,
) -> AppResult<Response> {
    // Validate before touching the cache, so junk never takes L1 space.
    let canonical = spanish::validate_infinitive(&infinitive).map_err(|e| {
        AppError::Validation(vec![FieldError::new(
            "infinitive",
            format!("is not a Spanish infinitive: {}", e.reason),
        )])
    })?;
    let cached = state
        .cache
        .get_or_load(Namespace::Verbs, &format!("conj:{canonical}"), || async {
            spanish::conjugate(&canonical).map_err(|e| AppError::Internal(e.into()))
        })
        .await?;
    Ok(cached.respond_public(&headers, CONJUGATION_CACHE))
}
