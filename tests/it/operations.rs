//! `/health`, `/ready`, `/metrics` against real dependencies.

use std::time::Duration;

use crate::support::TestApp;

#[tokio::test]
async fn ready_reports_primary_replica_with_lag_and_redis() {
    let app = TestApp::start().await;
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready", "{body:#}");
    let deps = &body["dependencies"];
    assert_eq!(deps["primary"]["status"], "up");
    assert_eq!(deps["redis"]["status"], "up");
    let replica = &deps["replicas"][0];
    assert_eq!(replica["status"], "up");
    assert_eq!(replica["in_rotation"], true);
    assert!(
        replica["lag_seconds"]
            .as_f64()
            .is_some_and(|lag| lag >= 0.0),
        "{replica}"
    );
    app.stop().await;
}

#[tokio::test]
async fn health_answers_even_when_every_dependency_is_down() {
    // Nothing listens on these ports.
    let app = TestApp::builder()
        .without_replica()
        .unseeded()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .start_with_primary_url("postgres://postgres@127.0.0.1:1/nothing")
        .await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["dependencies"]["primary"]["status"], "down");
    assert_eq!(body["dependencies"]["redis"]["status"], "down");
    // A data request fails cleanly with a 503 problem, not a 500 or a hang.
    let response = app.get("/api/v1/cities").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn redis_down_degrades_readiness_but_fails_no_request() {
    let app = TestApp::builder()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .start()
        .await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["dependencies"]["redis"]["status"], "down");
    let (status, _) = app.get_json("/api/v1/cities").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_not_raw_path() {
    let app = TestApp::start().await;
    app.get("/api/v1/cities?limit=2").await;
    app.get("/api/v1/cities?limit=3").await;
    app.get("/no/such/path/12345").await;
    let text = app.get("/metrics").await.text().await.expect("text");
    let count = crate::support::metric_value(
        &text,
        "api_requests_total",
        &[
            ("method", "GET"),
            ("endpoint", "/api/v1/cities"),
            ("status", "200"),
        ],
    );
    assert_eq!(count, 2.0);
    assert_eq!(
        crate::support::metric_value(
            &text,
            "api_requests_total",
            &[("endpoint", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        !text.contains("/no/such/path"),
        "raw paths must not become labels"
    );
    assert!(text.contains("api_request_duration_seconds_bucket{endpoint=\"/api/v1/cities\""));
    assert!(crate::support::metric_value(&text, "api_active_connections", &[]) >= 1.0);
    assert_eq!(
        crate::support::metric_value(&text, "db_pool_max_connections", &[("pool", "primary")]),
        5.0
    );
    assert!(text.contains("db_pool_connections{pool=\"replica-0\",state=\"idle\"}"));
    assert!(text.contains("db_replica_lag_seconds{replica=\"replica-0\"}"));
    assert_eq!(
        crate::support::metric_value(&text, "db_replica_in_rotation", &[("replica", "replica-0")]),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_every_route_and_the_docs_page_is_served() {
    let app = TestApp::start().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    for path in ["/health", "/ready", "/metrics", "/api/v1/cities"] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    let response = app.get("/docs/").await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.expect("html");
    assert!(html.contains("swagger"), "docs page is Swagger UI");
    // Assets are served by the app itself (vendored), so the page works offline.
    let response = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_instances_migrating_at_start_apply_each_migration_once() {
    use crate::services::services;
    let db = services().create_empty_database().await;
    let mut builds = Vec::new();
    for _ in 0..3 {
        let url = db.primary_url.clone();
        builds.push(tokio::spawn(async move {
            let mut env = std::collections::HashMap::new();
            env.insert("DATABASE_URL".to_owned(), url);
            env.insert("MIGRATE_ON_START".to_owned(), "true".to_owned());
            env.insert(
                "REDIS_URL".to_owned(),
                crate::services::services().redis_url(),
            );
            let config =
                refbackend::config::Config::from_lookup(|k| env.get(k).cloned()).expect("config");
            let app = refbackend::app::App::build(config)
                .await
                .expect("build with migrations");
            app.shutdown().await;
        }));
    }
    for build in builds {
        tokio::time::timeout(Duration::from_secs(60), build)
            .await
            .expect("no deadlock")
            .expect("task");
    }
    let pool = sqlx::PgPool::connect(&db.primary_url)
        .await
        .expect("connect");
    let (applied, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&pool)
    .await
    .expect("migrations table");
    assert_eq!(applied, distinct);
    assert_eq!(
        applied as usize,
        refbackend::db::migrate::MIGRATOR.iter().count()
    );
    pool.close().await;
}
