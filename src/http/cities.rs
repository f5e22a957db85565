//! CivicQ cities: the public catalogue questions belong to.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::cache::Namespace;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{AppPath, AppQuery};
use crate::http::pagination::{PageQuery, PageRequest, finish_page};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_cities))
        .routes(routes!(get_city))
}

/// Cities change rarely: shared caches (nginx, CDNs) may keep them a minute.
const CACHE: &str = "public, max-age=60, stale-while-revalidate=30";

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct City {
    pub id: i64,
    /// Stable, URL-friendly name (`austin-tx`).
    pub slug: String,
    pub name: String,
    /// State, province or region.
    pub region: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// IANA time zone (`America/Chicago`).
    pub timezone: String,
    pub population: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CityPage {
    pub items: Vec<City>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Lists cities alphabetically, with keyset pagination. Public and cacheable;
/// served from a read replica when one is healthy.
#[utoipa::path(get, path = "/cities", tag = "civic",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of cities", body = CityPage),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed query string", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_cities(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<PageQuery>,
) -> AppResult<Response> {
    let page = query.parse::<(String, i64)>()?;
    let key = format!(
        "list:{}:{}",
        page.limit,
        query.cursor.as_deref().unwrap_or("")
    );
    let cached = state
        .cache
        .get_or_load(Namespace::Cities, &key, || load_page(&state, page))
        .await?;
    Ok(cached.respond_public(&headers, CACHE))
}

async fn load_page(state: &AppState, page: PageRequest<(String, i64)>) -> AppResult<CityPage> {
    // One row more than asked tells whether another page exists.
    let fetch = page.limit + 1;
    let rows = state
        .db
        .read(|pool| {
            let after = page.after.clone();
            async move {
                match after {
                    None => {
                        sqlx::query_as::<_, City>(
                            "SELECT id, slug, name, region, country, timezone, population
                               FROM cities
                              ORDER BY name, id
                              LIMIT $1",
                        )
                        .bind(fetch)
                        .fetch_all(&pool)
                        .await
                    }
                    Some((name, id)) => {
                        sqlx::query_as::<_, City>(
                            "SELECT id, slug, name, region, country, timezone, population
                               FROM cities
                              WHERE (name, id) > ($1, $2)
                              ORDER BY name, id
                              LIMIT $3",
                        )
                        .bind(name)
                        .bind(id)
                        .bind(fetch)
                        .fetch_all(&pool)
                        .await
                    }
                }
            }
        })
        .await?;
    let (items, next_cursor) = finish_page(rows, page.limit, |c| (c.name.clone(), c.id));
    Ok(CityPage { items, next_cursor })
}

/// One city by id. Public and cacheable; served from a read replica when one is healthy.
#[utoipa::path(get, path = "/cities/{id}", tag = "civic",
    params(("id" = i64, Path, description = "City id")),
    responses(
        (status = 200, description = "The city", body = City),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "The id is not an integer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_city(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppPath(id): AppPath<i64>,
) -> AppResult<Response> {
    let cached = state
        .cache
        .get_or_load(Namespace::Cities, &format!("id:{id}"), || {
            load_city(&state, id)
        })
        .await?;
    Ok(cached.respond_public(&headers, CACHE))
}

async fn load_city(state: &AppState, id: i64) -> AppResult<City> {
    state
        .db
        .read(|pool| async move {
            sqlx::query_as::<_, City>(
                "SELECT id, slug, name, region, country, timezone, population
                   FROM cities
                  WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
        })
        .await?
        .ok_or_else(|| AppError::NotFound(format!("No city with id {id}")))
}
