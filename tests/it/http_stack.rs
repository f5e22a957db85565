//! The middleware stack: problem+json for every error, gzip threshold, request
//! ids, timeouts, panics, body limits and CORS. Routes that only exist here are
//! wrapped in the production stack (`app::with_middleware`) with a real state.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use refbackend::app::with_middleware;
use refbackend::http::extract::AppJson;
use serde::Deserialize;

use crate::support::TestApp;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Greeting {
    name: String,
    times: u8,
}

/// Serves `router` wrapped in the production middleware with `app`'s state.
async fn serve_with_stack(app: &TestApp, router: Router) -> String {
    let router = with_middleware(router, &app.state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn test_routes() -> Router {
    Router::new()
        .route(
            "/echo",
            post(|AppJson(g): AppJson<Greeting>| async move { g.name }),
        )
        .route(
            "/bytes/{n}",
            get(|axum::extract::Path(n): axum::extract::Path<usize>| async move { "a".repeat(n) }),
        )
        .route(
            "/panic",
            get(|| async { if true { panic!("boom") } else { "unreachable" } }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
}

async fn assert_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("/problems/"))
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn malformed_json_wrong_shape_and_wrong_content_type_get_problem_json() {
    let app = TestApp::builder().without_replica().start().await;
    let base = serve_with_stack(&app, test_routes()).await;
    let client = &app.client;
    let send = |body: &'static str, content_type: &'static str| {
        client
            .post(format!("{base}/echo"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let ok = send(r#"{"name":"Ana","times":2}"#, "application/json")
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    assert_problem(
        send(r#"{"name": "Ana", "times"#, "application/json")
            .await
            .expect("sent"),
        400,
    )
    .await;
    let body = assert_problem(
        send(r#"{"name":"Ana","times":"many"}"#, "application/json")
            .await
            .expect("sent"),
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "body");
    assert_problem(
        send(r#"{"name":"Ana","times":2}"#, "text/plain")
            .await
            .expect("sent"),
        415,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_two_megabyte_body_gets_413_problem_json() {
    let app = TestApp::builder().without_replica().start().await;
    let big = format!(
        "{{\"name\":\"{}\",\"times\":1}}",
        "x".repeat(2 * 1024 * 1024)
    );
    // Through the JSON extractor on a test route...
    let base = serve_with_stack(&app, test_routes()).await;
    let response = app
        .client
        .post(format!("{base}/echo"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("sent");
    assert_problem(response, 413).await;
    // ...and against the real server.
    let response = app
        .client
        .post(app.url("/api/v1/cities"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("sent");
    assert_problem(response, 413).await;
    app.stop().await;
}

#[tokio::test]
async fn responses_of_1000_bytes_or_more_are_gzipped_and_smaller_ones_are_not() {
    let app = TestApp::builder().without_replica().start().await;
    let base = serve_with_stack(&app, test_routes()).await;
    let fetch = |n: usize| {
        app.client
            .get(format!("{base}/bytes/{n}"))
            .header("accept-encoding", "gzip")
            .send()
    };
    let small = fetch(999).await.expect("sent");
    assert!(small.headers().get("content-encoding").is_none());
    assert_eq!(small.bytes().await.expect("body").len(), 999);
    let large = fetch(1000).await.expect("sent");
    assert_eq!(large.headers()["content-encoding"], "gzip");
    assert!(large.bytes().await.expect("body").len() < 1000);

    // The real endpoints: a full page of cities is compressed, /health is not.
    let cities = app
        .client
        .get(app.url("/api/v1/cities?limit=100"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert_eq!(cities.headers()["content-encoding"], "gzip");
    let health = app
        .client
        .get(app.url("/health"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert!(health.headers().get("content-encoding").is_none());
    // Without Accept-Encoding nothing is compressed.
    let plain = app.get("/api/v1/cities?limit=100").await;
    assert!(plain.headers().get("content-encoding").is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_gives_a_500_problem_and_the_server_keeps_serving() {
    let app = TestApp::builder().without_replica().start().await;
    let base = serve_with_stack(&app, test_routes()).await;
    let response = app
        .client
        .get(format!("{base}/panic"))
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 500).await;
    assert!(
        !body.to_string().contains("boom"),
        "panic text stays in the logs"
    );
    let response = app
        .client
        .get(format!("{base}/bytes/3"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_request_over_the_timeout_gets_a_503_problem_with_retry_after() {
    let app = TestApp::builder()
        .without_replica()
        .env("HTTP_REQUEST_TIMEOUT", "300ms")
        .start()
        .await;
    let base = serve_with_stack(&app, test_routes()).await;
    let started = std::time::Instant::now();
    let response = app
        .client
        .get(format!("{base}/slow"))
        .send()
        .await
        .expect("sent");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, 503).await;
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_is_echoed_when_sent_and_generated_when_not() {
    let app = TestApp::builder().without_replica().start().await;
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    let generated = app.get("/health").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let other = app.get("/health").await;
    assert_ne!(other.headers()["x-request-id"].to_str().expect("ascii"), id);
    // Errors carry it too, so a client can quote it in a bug report.
    let missing = app.get("/nowhere").await;
    assert!(missing.headers().contains_key("x-request-id"));
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_json() {
    let app = TestApp::builder().without_replica().start().await;
    assert_problem(app.get("/api/v1/nothing-here").await, 404).await;
    let response = app
        .client
        .delete(app.url("/api/v1/cities"))
        .send()
        .await
        .expect("sent");
    assert!(response.headers().contains_key("allow"));
    assert_problem(response, 405).await;
    app.stop().await;
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let app = TestApp::builder()
        .without_replica()
        .env("CORS_ALLOWED_ORIGINS", "https://app.example.com")
        .start()
        .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/cities"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("sent");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let denied = preflight("https://evil.example.net").await.expect("sent");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await;

    // Not configured: no CORS headers at all.
    let app = TestApp::builder().without_replica().start().await;
    let response = app
        .client
        .get(app.url("/api/v1/cities"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("sent");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_accept_encoding_that_refuses_every_coding_gets_406_before_the_handler_runs() {
    let app = TestApp::builder().without_replica().start().await;
    let (_, token) = app.register_member("refuses-codings@example.com").await;
    let body = "Will the library open on Sundays if every coding is refused?";
    let ask = |accept: &'static str| {
        app.client
            .post(app.url("/api/v1/cities/1/questions"))
            .bearer_auth(&token)
            .header("accept-encoding", accept)
            .json(&serde_json::json!({ "body": body }))
            .send()
    };
    // Neither identity nor gzip is acceptable: the question must not be
    // written (a 406 after the handler ran would report a committed write as
    // refused), and the answer is a problem like every other error.
    for refusing in [
        "identity;q=0",
        "*;q=0",
        "br, identity;q=0",
        "gzip;q=0, identity;q=0",
    ] {
        let response = ask(refusing).await.expect("sent");
        let problem = assert_problem(response, 406).await;
        assert_eq!(problem["type"], "/problems/not-acceptable", "{refusing}");
    }
    let asked: i64 = sqlx::query_scalar("SELECT count(*) FROM questions WHERE body = $1")
        .bind(body)
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
    assert_eq!(asked, 0, "no refused request wrote anything");
    // A page read the same way is refused too, and the same page with a
    // weight that still accepts gzip is served, compressed.
    let page = |accept: &'static str| {
        app.client
            .get(app.url("/api/v1/cities?limit=100"))
            .header("accept-encoding", accept)
            .send()
    };
    assert_problem(page("br, identity;q=0").await.expect("sent"), 406).await;
    let page = page("gzip;q=0.5, identity;q=0").await.expect("sent");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-encoding"], "gzip");
    // And the write goes through when a coding is acceptable.
    let response = ask("gzip;q=0.5, identity;q=0").await.expect("sent");
    assert_eq!(response.status(), 201);
    app.stop().await;
}
