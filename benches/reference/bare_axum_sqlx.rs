//! Reference program for benchmarks (docs/benchmarks.md): bare axum + sqlx doing
//! one primary-key SELECT per request with sqlx's default pool settings. The
//! API's uncached single-query reads are compared against this.
//!
//! `DATABASE_URL=postgres://… BIND_ADDR=127.0.0.1:8091 cargo run --release --example bare_axum_sqlx`
//! (needs the `cities` table: run `refbackend migrate && refbackend seed` first).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[derive(serde::Serialize, sqlx::FromRow)]
struct City {
    id: i64,
    slug: String,
    name: String,
    region: String,
    country: String,
    timezone: String,
    population: Option<i32>,
}

async fn city(
    State(pool): State<PgPool>,
    Path(id): Path<i64>,
) -> Result<Json<City>, axum::http::StatusCode> {
    sqlx::query_as::<_, City>(
        "SELECT id, slug, name, region, country, timezone, population FROM cities WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .map(Json)
    .map_err(|_| axum::http::StatusCode::NOT_FOUND)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8091".to_owned());
    let max: u32 = std::env::var("POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .connect(&url)
        .await?;
    let app = Router::new()
        .route("/cities/{id}", get(city))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("bare_axum_sqlx listening on {bind}");
    axum::serve(listener, app).await?;
    Ok(())
}
